"""One tiny E5-V replica per test session (no downloads) and a reference ``E5VEncoder`` loaded directly over it."""

from __future__ import annotations

import os
import warnings

import pytest

# Haystack reads this when first imported (before the test modules): no telemetry attempts from tests.
os.environ.setdefault("HAYSTACK_TELEMETRY_ENABLED", "False")


@pytest.fixture(scope="session")
def replica_path(tmp_path_factory):
    from e5v_qdrant.testing import build_replica

    return build_replica(tmp_path_factory.mktemp("e5v_haystack") / "e5v-tiny")


@pytest.fixture(scope="session")
def reference(replica_path):
    """The independent reference: an ``E5VEncoder`` built directly (not through e5v_haystack or its cache)."""
    from e5v_qdrant.encoder import E5VEncoder

    with warnings.catch_warnings():
        warnings.simplefilter("ignore")  # the replica reproduces the published checkpoint's traps, with warnings
        return E5VEncoder(replica_path, device="cpu", dtype="float32", batch_size=3)


@pytest.fixture(scope="session")
def files(tmp_path_factory):
    """Three PNG pictures and a two-page PDF whose pages are two other pictures, in one folder."""
    from e5v_qdrant.testing import draw_image

    folder = tmp_path_factory.mktemp("files")
    for seed in range(3):
        draw_image(36 + 8 * seed, 40, seed=20 + seed).save(folder / f"img{seed}.png")
    pages = [draw_image(60, 80, seed=30), draw_image(80, 60, seed=31)]
    pages[0].save(folder / "doc.pdf", save_all=True, append_images=pages[1:], resolution=72)
    return folder
