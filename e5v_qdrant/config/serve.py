"""The HTTP server options."""

from __future__ import annotations

import os
from dataclasses import dataclass

from ..errors import E5VConfigError
from ..options import Options, option

__all__ = ["ServeConfig"]


@dataclass
class ServeConfig(Options):
    """How `e5v-qdrant serve` listens, batches and limits requests (feeds ``e5v_qdrant.server.create_app`` too)."""

    host: str = option(
        "127.0.0.1",
        help="interface to bind; 0.0.0.0 exposes the server to the network (then also set --server-api-key-env)",
    )
    port: int = option(8000, help="TCP port to listen on")
    api_key_env: str | None = option(
        None,
        help="name of an environment variable holding a key clients must send as 'Authorization: Bearer KEY' "
        "(the key is never logged or taken from argv); default: no key. Qdrant's own key: --qdrant-api-key-env",
        flag="--server-api-key-env",
        deprecated_flags=("--api-key-env",),
    )
    served_model_name: str | None = option(
        None, help="model name listed by /v1/models and echoed in responses; default: the --model value"
    )
    max_batch_size: int = option(32, help="most inputs coalesced from concurrent requests into one encoder call")
    max_wait_ms: float = option(
        5.0, help="how long the first waiting request holds its batch open for others to join (milliseconds)"
    )
    max_coalesced_tokens: int = option(
        16384,
        help="token budget of one coalesced encoder call (prompted text tokens + image tokens); a single larger "
        "request still runs, alone",
    )
    max_items: int = option(256, help="most inputs in one request (more gets 413)")
    max_body_bytes: int = option(
        32 * 1024 * 1024, help="largest request body in bytes (more gets 413); base64 images count here"
    )
    max_queue: int = option(4096, help="most inputs waiting for the model; beyond it requests get 503 (back-pressure)")
    max_top_k: int = option(100, help="largest top_k a /v1/search request may ask for")
    # hardening (issue 28): cheap limits before expensive work, no unauthenticated exposure by accident
    max_input_tokens: int | None = option(
        None,
        help="most tokens one input may have (the prompted text; with an image, its tokens too); more gets 400 "
        "naming the limit. Default: the model's context (max_position_embeddings)",
    )
    max_input_chars: int | None = option(
        None,
        help="most characters one text may have, checked before any tokenizing; more gets 400 naming the limit. "
        "Default: 16 x max_input_tokens",
    )
    allow_unauthenticated: bool = option(
        False,
        help="serve without an API key on a --host other than loopback (a warning is logged); without it such a "
        "server refuses to start",
    )

    def validate(self) -> None:
        if not 0 <= self.port <= 65535:
            raise E5VConfigError(f"port must be in 0..65535, got {self.port}")
        if self.max_wait_ms < 0:
            raise E5VConfigError(f"max_wait_ms must be >= 0, got {self.max_wait_ms}")
        for name in ("max_batch_size", "max_coalesced_tokens", "max_items", "max_body_bytes", "max_queue", "max_top_k",
                     "max_input_tokens", "max_input_chars"):  # fmt: skip
            if getattr(self, name) is not None and getattr(self, name) < 1:
                raise E5VConfigError(f"{name} must be >= 1, got {getattr(self, name)}")
        if self.api_key_env is not None and not self.api_key_env:
            raise E5VConfigError("api_key_env must name an environment variable, e.g. E5V_API_KEY")

    @property
    def api_key(self) -> str | None:
        """The bearer key read from ``api_key_env`` (never logged).

        Raises:
            E5VConfigError: ``api_key_env`` names a variable that is unset or empty.
        """
        if self.api_key_env is None:
            return None
        key = os.environ.get(self.api_key_env)
        if not key:
            raise E5VConfigError(
                f"--server-api-key-env {self.api_key_env}: that environment variable is unset or empty; export the "
                "key in it, or drop --server-api-key-env to serve without a key"
            )
        return key
