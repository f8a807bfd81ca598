"""Helpers shared by test modules (tests never import each other): corpora, CLI runs, store inspection, fault injection."""

from __future__ import annotations

import numpy as np

from e5v_qdrant.cli import main
from e5v_qdrant.config import StoreConfig
from e5v_qdrant.store import VECTOR_NAME, open_client
from e5v_qdrant.testing import draw_image

TEXTS = {
    "animals.txt": " ".join(
        f"The {a} number {i} sleeps under the {p} while the rain falls."
        for i, (a, p) in enumerate(
            [("cat", "table"), ("dog", "bench"), ("fox", "tree"), ("owl", "roof"), ("horse", "bridge")] * 3
        )
    ),
    "food.md": "# Recipes\n\n" + " ".join(f"Step {i}: mix {i} cups of flour with butter and sugar." for i in range(12)),
    "page.html": "<html><body><h1>Support</h1><p>The invoice was charged twice this month.</p>"
    "<p>Please refund the second payment to the card ending 4242.</p><script>track()</script></body></html>",
}


def make_corpus(root):
    root.mkdir(parents=True, exist_ok=True)
    for name, text in TEXTS.items():
        (root / name).write_text(text)
    (root / "pics").mkdir(exist_ok=True)
    draw_image(120, 90, seed=1).save(root / "pics" / "one.png")
    draw_image(90, 120, seed=2).save(root / "pics" / "two.jpg")
    draw_image(100, 100, seed=3).save(root / "pics" / "three.webp")
    return root


class FlakyClient:
    """Wraps a real client; the first ``fail`` calls of ``method`` raise ``exc`` before reaching it."""

    def __init__(self, inner, method: str = "upsert", fail: int = 2, exc: Exception | None = None):
        self._inner, self._method, self._left = inner, method, fail
        self._exc = exc or ConnectionResetError("connection reset by peer")
        self.calls = 0

    def __getattr__(self, name):
        attr = getattr(self._inner, name)
        if name != self._method:
            return attr

        def wrapped(*args, **kwargs):
            self.calls += 1
            if self._left > 0:
                self._left -= 1
                raise self._exc
            return attr(*args, **kwargs)

        return wrapped


COMMON = [
    "--device",
    "cpu",
    "--dtype",
    "float32",
    "--chunk-size",
    "128",
    "--chunk-overlap",
    "4",
    "--retry-wait",
    "0.001",
]


def run_ingest(paths, qd, model, *extra):
    return main(
        [
            "ingest",
            *map(str, paths),
            "--collection",
            "docs",
            "--qdrant-path",
            str(qd),
            "--model",
            str(model),
            *COMMON,
            *extra,
        ]
    )


def points_of(qd, name="docs", vectors=False) -> dict:
    """Point id → payload (or (payload, float64 vector) with ``vectors``) of collection ``name`` in the store ``qd``."""
    client = open_client(StoreConfig(qdrant_path=str(qd), retries=1))  # whichever engine the folder holds
    try:
        out, offset = {}, None
        while True:
            records, offset = client.scroll(name, limit=256, offset=offset, with_payload=True, with_vectors=vectors)
            for r in records:
                out[str(r.id)] = (
                    (r.payload, np.asarray(r.vector[VECTOR_NAME], dtype=np.float64)) if vectors else r.payload
                )
            if offset is None:
                return out
    finally:
        client.close()


def edge_points_now(store_dir, name: str) -> int:
    """Points of collection ``name`` in an Edge store another process may be writing: counted in a copy of the folder
    (what a crash at this instant would leave), 0 if there is none yet."""
    import shutil
    import sys
    import tempfile

    from e5v_qdrant.edge import EdgeClient, read_manifest

    if not (store_dir / "e5v_edge.json").exists():
        return 0
    manifest = read_manifest(str(store_dir))
    if name not in manifest["collections"] and name not in manifest["aliases"]:
        return 0  # not created yet: no need to copy
    with tempfile.TemporaryDirectory() as tmp:
        copy = f"{tmp}/store"
        try:
            shutil.copytree(store_dir, copy)
            client = EdgeClient(copy)
        except Exception as exc:  # a file replaced while copying: try again at the next poll
            # stderr: the tests read the CLI's JSON from stdout
            print(f"edge_points_now({store_dir}): {exc!r}", file=sys.stderr)
            return 0
        try:
            return client.count(name).count
        except ValueError:  # not created yet
            return 0
        finally:
            client.close()
