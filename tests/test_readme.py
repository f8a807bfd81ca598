"""The README's code runs as written (issue 26): every ```bash and ```python block, in order, in one folder.

How a block is run — the way a reader pastes them into one terminal:

- Each block runs in the same scratch folder (``sample_tree`` below creates the files the README names: ``dog.jpg``,
  ``./docs``, ``./manuals`` …). Bash blocks run with ``set -euo pipefail``; variables a block exports reach the later
  blocks (as in one terminal). Python blocks run with ``python`` in that folder and environment.
- The model is **not** substituted in the text: ``royokong/e5-v`` resolves through a Hugging Face cache
  (``HF_HOME``, ``HF_HUB_OFFLINE=1``) whose snapshot of that repo is a tiny replica, so the README's real loading
  path runs (hub id → snapshot → safetensors) and finishes in seconds on a CPU. A ``revision="<commit>"``
  placeholder becomes that snapshot's commit.
- Install steps (``python3 -m venv …``, ``. .venv/bin/activate``, ``pip install …``) are left out of bash blocks:
  the suite already runs in the installed environment (``.ci/run`` installs exactly what the README says).
- A block may be preceded by HTML comments that steer this test (invisible on the rendered page):
  ``<!-- readme-test: skip: REASON -->`` (the block is not run; the reason says why, e.g. a cluster),
  ``<!-- readme-test: replace: OLD => NEW -->`` (a placeholder such as ``<commit>`` or a long run's step count),
  ``<!-- readme-test: background: URL -->`` (the block's last command is a server: started in the background,
  ready once URL answers 200, stopped at the end of its ``##`` section).
"""

from __future__ import annotations

import json
import os
import re
import shutil
import signal
import subprocess
import sys
import time
import urllib.request
from dataclasses import dataclass, field
from pathlib import Path

import pytest

README = Path(__file__).resolve().parents[1] / "README.md"
#: the commit the fake hub cache files the replica under (a placeholder ``<commit>`` in the README becomes it)
FAKE_COMMIT = "0123456789abcdef0123456789abcdef01234567"
BLOCK_TIMEOUT = 900
INSTALL_STEP = re.compile(
    r"^\s*(python3? -m venv\b|\. \.venv/bin/activate\b|source \.venv/bin/activate\b|pip install\b)"
)
DIRECTIVE = re.compile(r"^<!--\s*readme-test:\s*(\w[\w-]*)\s*:?\s*(.*?)\s*-->\s*$")


@dataclass
class Block:
    """One fenced code block of the README and the directives written above it."""

    line: int  # 1-based line of the opening fence
    language: str
    code: str
    section: str  # the ``## `` heading it sits under
    skip: str | None = None
    background: str | None = None
    replacements: list[tuple[str, str]] = field(default_factory=list)

    @property
    def id(self) -> str:
        return f"L{self.line}-{self.language}"


def readme_blocks(text: str) -> list[Block]:
    """The README's ```bash / ```python blocks in order, with their ``readme-test`` directives."""
    blocks: list[Block] = []
    lines = text.splitlines()
    section, pending, i = "", [], 0
    while i < len(lines):
        line = lines[i]
        if line.startswith("## "):
            section = line[3:].strip()
        match = DIRECTIVE.match(line.strip())
        if match:
            pending.append(match.groups())
        elif line.startswith("```") and line[3:].strip():
            language, start, body = line[3:].strip(), i + 1, []
            i += 1
            while i < len(lines) and not lines[i].startswith("```"):
                body.append(lines[i])
                i += 1
            if language in ("bash", "python"):
                block = Block(start, language, "\n".join(body) + "\n", section)
                for name, value in pending:
                    if name == "skip":
                        block.skip = value or "skipped"
                    elif name == "background":
                        block.background = value
                    elif name == "replace":
                        old, sep, new = value.partition(" => ")
                        assert sep, f"README line {start}: replace needs 'OLD => NEW', got {value!r}"
                        block.replacements.append((old, new))
                    else:
                        raise AssertionError(f"README line {start}: unknown readme-test directive {name!r}")
                blocks.append(block)
            pending = []
        elif line.strip():
            pending = []
        i += 1
    return blocks


def test_readme_directives_parse_and_every_block_is_known():
    """The parser sees each fenced bash/python block (a fence it missed would silently go untested)."""
    text = README.read_text()
    fences = [n for n, line in enumerate(text.splitlines(), 1) if re.match(r"^```(bash|python)\s*$", line)]
    assert [b.line for b in readme_blocks(text)] == fences
    toy = "## A\n<!-- readme-test: replace: 1000 => 2 -->\n```bash\necho 1000\n```\ntext\n```python\nx = 1\n```\n"
    assert [(b.section, b.replacements, b.code) for b in readme_blocks(toy)] == [
        ("A", [("1000", "2")], "echo 1000\n"),
        ("A", [], "x = 1\n"),
    ]


BLOCKS = readme_blocks(README.read_text())


# ---------------------------------------------------------------- the scratch folder and its environment
REPO = README.parent
#: what a fresh clone holds that the README's examples read (``ingest README.md docs examples``)
CLONE_FILES = ("README.md", "docs", "examples")


def _write_samples(root: Path) -> None:
    """The files and folders the README's examples name, small enough for the tiny replica.

    The scratch folder starts as a clone's top level (``CLONE_FILES``); everything else is made here.
    """
    from e5v_qdrant.testing import draw_image

    for name in CLONE_FILES:
        (shutil.copytree if (REPO / name).is_dir() else shutil.copy)(REPO / name, root / name)
    for name, (w, h, seed) in {"dog.jpg": (96, 64, 1), "cat.jpg": (64, 64, 2), "cat.png": (80, 60, 3)}.items():
        draw_image(w, h, seed=seed).save(root / name)
    folders = {
        "manuals": {"codes.txt": "Error XJ-4471-QZ means the pump is dry.", "setup.md": "Mount the pump level."},
        "catalog": {"shirt.txt": "A blue linen shirt."},
    }
    for folder, files in folders.items():
        (root / folder).mkdir()
        for name, content in files.items():
            (root / folder / name).write_text(content)
    (root / "photos").mkdir()
    draw_image(120, 80, seed=4).save(root / "photos" / "beach.jpg")
    (root / "catalog" / "shirt.jpg").write_bytes((root / "dog.jpg").read_bytes())
    pages = [draw_image(200, 280, seed=s) for s in (5, 6)]  # image-only PDF pages (Pillow's PDF writer): scans
    (root / "manuals" / "pumps").mkdir()
    pages[0].save(root / "manuals" / "pumps" / "wiring.pdf", save_all=True, append_images=pages[1:])
    (root / "scans").mkdir()
    pages[1].save(root / "scans" / "invoice.pdf")
    rows = [
        {"anchor": f"question {i} on pumps", "positive": f"pump answer {i}", "negative": f"other {i}"} for i in range(8)
    ]
    for name in ("triplets.jsonl", "heldout.jsonl"):
        (root / name).write_text("".join(json.dumps(r) + "\n" for r in rows))
    _write_eval_samples(root, draw_image)


def _write_eval_samples(root: Path, draw_image) -> None:
    """The public evaluation sets' file formats, a few rows each (Karpathy JSON, CIRR-style JSONL, STS TSV,
    FashionIQ's caption and split files)."""
    captions = ["a red circle", "two green squares", "a wide sunset", "a small cat"]
    (root / "flickr30k-images").mkdir()
    (root / "cirr" / "dev").mkdir(parents=True)
    (root / "images").mkdir()
    for i in range(4):
        draw_image(64 + 8 * i, 48, seed=20 + i).save(root / "flickr30k-images" / f"{i}.jpg")
        draw_image(48, 64 + 8 * i, seed=30 + i).save(root / "cirr" / "dev" / f"{i}.png")
        draw_image(56, 56 + 4 * i, seed=40 + i).save(root / "images" / f"d{i}.png")
    karpathy = [{"filename": f"{i}.jpg", "split": "test", "sentences": [{"raw": c}]} for i, c in enumerate(captions)]
    (root / "dataset_flickr30k.json").write_text(json.dumps({"dataset": "flickr30k", "images": karpathy}))
    cirr = [
        {"reference": f"{i}.png", "text": f"make it {c}", "target": f"{(i + 1) % 4}.png"}
        for i, c in enumerate(captions)
    ]
    (root / "cirr_val.jsonl").write_text("".join(json.dumps(r) + "\n" for r in cirr))
    sts = ["A cat sits.\tA kitten sits.\t4.8", "A man cycles.\tSnow falls.\t0.2", "Dogs run.\tDogs are running.\t4.1"]
    (root / "sts-b-test.tsv").write_text("sentence1\tsentence2\tscore\n" + "\n".join(sts) + "\n")
    (root / "captions").mkdir()
    (root / "image_splits").mkdir()
    fiq = [
        {"candidate": f"d{i}", "target": f"d{(i + 1) % 4}", "captions": ["is longer", f"is {c}"]}
        for i, c in enumerate(captions)
    ]
    (root / "captions" / "cap.dress.val.json").write_text(json.dumps(fiq))
    (root / "image_splits" / "split.dress.val.json").write_text(json.dumps([f"d{i}" for i in range(4)]))


@pytest.fixture(scope="module")
def world(tmp_path_factory, replica_path):
    """(scratch folder, environment file) shared by every block of the README, in order."""
    root = tmp_path_factory.mktemp("readme")
    home = root.parent / f"{root.name}-hf"
    repo = home / "hub" / "models--royokong--e5-v"
    snapshot = repo / "snapshots" / FAKE_COMMIT
    snapshot.mkdir(parents=True)
    for f in Path(replica_path).iterdir():
        shutil.copy(f, snapshot / f.name)
    (repo / "refs").mkdir()
    (repo / "refs" / "main").write_text(FAKE_COMMIT)
    _write_samples(root)
    env_file = root.parent / f"{root.name}-env.sh"
    bin_dir = Path(sys.executable).parent
    env_file.write_text(
        f"export HF_HOME={home} HF_HUB_OFFLINE=1 TRANSFORMERS_VERBOSITY=error TOKENIZERS_PARALLELISM=false\n"
        f'export PATH="{bin_dir}:$PATH"\n'
    )
    servers: dict[str, subprocess.Popen] = {}  # README section -> the server started in it
    yield root, env_file, servers
    _stop(servers)


def _stop(servers: dict[str, subprocess.Popen], keep: str | None = None) -> None:
    """Stop the servers started in other sections than ``keep``."""
    for section, proc in list(servers.items()):
        if section == keep:
            continue
        del servers[section]
        if proc.poll() is None:
            os.killpg(proc.pid, signal.SIGTERM)
            try:
                proc.wait(30)
            except subprocess.TimeoutExpired:
                os.killpg(proc.pid, signal.SIGKILL)


def _script(block: Block) -> str:
    code = block.code.replace("<commit>", FAKE_COMMIT)  # a pinned revision: the fake hub cache's commit
    for old, new in block.replacements:
        assert old in code, f"README line {block.line}: replace target {old!r} is not in the block"
        code = code.replace(old, new)
    if block.language == "python":
        return code
    kept = []
    for line in code.splitlines():
        steps = [s for s in line.split(" && ") if not INSTALL_STEP.match(s)]
        kept.append(" && ".join(steps))
    return "\n".join(kept) + "\n"


def _run(block: Block, root: Path, env_file: Path, servers: dict[str, subprocess.Popen]) -> subprocess.CompletedProcess:
    script = _script(block)
    path = root.parent / f"{root.name}-block-{block.line}.{'py' if block.language == 'python' else 'sh'}"
    if block.language == "python":
        path.write_text(script)
        command = f'source "{env_file}" && exec python "{path}"'
    elif block.background:
        lines = script.rstrip("\n").splitlines()
        last = max(i for i, line in enumerate(lines) if line.strip() and not line.lstrip().startswith("#"))
        head, server = "\n".join(lines[:last]), lines[last]
        path.write_text(head + "\n")
        log = open(root.parent / f"{root.name}-server-{block.line}.log", "w")  # noqa: SIM115 (kept for the test)
        # the lines before the server run first (their exports reach the server and later blocks), then the server
        setup = _bash(f'source "{env_file}" && source "{path}" && export -p > "{env_file}.next"', root)
        assert setup.returncode == 0, setup.stdout + setup.stderr
        _merge_env(env_file)
        proc = subprocess.Popen(
            ["bash", "-c", f'source "{env_file}" && exec {server}'],
            cwd=root,
            stdout=log,
            stderr=subprocess.STDOUT,
            start_new_session=True,
        )
        servers[block.section] = proc
        _wait_ready(block.background, proc, log.name)
        return setup
    else:
        path.write_text("set -euo pipefail\n" + script)
        command = f'source "{env_file}" && source "{path}" && export -p > "{env_file}.next"'
    result = _bash(command, root)
    if block.language == "bash" and result.returncode == 0:
        _merge_env(env_file)
    return result


def _bash(command: str, root: Path) -> subprocess.CompletedProcess:
    env = {k: v for k, v in os.environ.items() if not k.startswith(("E5V_QDRANT_", "QDRANT_"))}
    return subprocess.run(
        ["bash", "-c", command], cwd=root, env=env, capture_output=True, text=True, timeout=BLOCK_TIMEOUT
    )


def _merge_env(env_file: Path) -> None:
    """Keep what the block exported (``declare -x`` lines; read-only shell variables left out) for later blocks."""
    exported = Path(f"{env_file}.next").read_text().splitlines()
    env_file.write_text("\n".join(line for line in exported if line.startswith("declare -x ")) + "\n")


def _wait_ready(url: str, proc: subprocess.Popen, log: str, timeout: float = 180) -> None:
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        assert proc.poll() is None, f"the README's server exited with {proc.returncode}:\n{Path(log).read_text()}"
        try:
            with urllib.request.urlopen(url, timeout=5) as response:  # noqa: S310 (a loopback URL from the README)
                if response.status == 200:
                    return
        except OSError:
            time.sleep(0.5)
    raise AssertionError(f"{url} did not answer within {timeout:g}s:\n{Path(log).read_text()}")


@pytest.mark.slow
@pytest.mark.parametrize("block", BLOCKS, ids=[b.id for b in BLOCKS])
def test_readme_block_runs_as_written(block, world):
    root, env_file, servers = world
    if block.skip:
        pytest.skip(f"README line {block.line}: {block.skip}")
    _stop(servers, keep=block.section)  # a server serves the blocks of its own section
    result = _run(block, root, env_file, servers)
    assert result.returncode == 0, (
        f"README line {block.line} ({block.section}) exited {result.returncode}\n"
        f"--- script\n{_script(block)}--- stdout\n{result.stdout[-4000:]}--- stderr\n{result.stderr[-6000:]}"
    )
