"""Batching and preprocessing must change speed only, never vectors.

Every test compares a batched / pipelined / mask-free run against the same inputs embedded one at a time (batch of one:
no padding, no batching decision), or checks a structural property of the batch plan.
"""

from __future__ import annotations

import random
import warnings

import numpy as np
import pytest

from e5v_qdrant import cpu_memory, last_token
from e5v_qdrant import encoder as encoder_module
from e5v_qdrant.encoder import E5VEncoder, _Prepared
from e5v_qdrant.errors import E5VImageError
from e5v_qdrant.testing import draw_image

WORDS = "cat dog river street bread ticket invoice snow cabin flour egg park bench photo query".split()


@pytest.fixture(scope="module")
def enc(replica_path):
    """A private encoder whose config the tests may change (the session ``encoder`` fixture stays untouched)."""
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")
        return E5VEncoder(replica_path, device="cpu", dtype="float32", batch_size=8, preprocess_workers=2)


@pytest.fixture
def configure(enc, monkeypatch):
    def apply(**options):
        for name, value in options.items():
            monkeypatch.setattr(enc.config, name, value)
            if name == "preprocess_workers":  # bypass the CPU-core cap so the thread path really runs here
                monkeypatch.setattr(enc, "_preprocess_workers", lambda value=value: value)

    return apply


def _texts(n: int, seed: int = 0) -> list[str]:
    rng = random.Random(seed)
    return [" ".join(rng.choice(WORDS) for _ in range(rng.randint(0, 60))) for _ in range(n)]


def _one_by_one(enc, embed, inputs, configure) -> np.ndarray:
    configure(batch_size=1, max_batch_tokens=None, preprocess_workers=0)
    return np.concatenate([embed([x]) for x in inputs])


def _plan(enc, lengths: list[int]) -> list[list[int]]:
    return enc._batches([_Prepared(list(range(n))) for n in lengths])


@pytest.mark.parametrize("seed", range(5))
def test_batch_plan_covers_every_item_once_within_limits(enc, configure, seed):
    rng = random.Random(seed)
    batch_size, budget = rng.randint(1, 6), rng.choice([None, 50, 300, 5000])
    configure(batch_size=batch_size, max_batch_tokens=budget)
    lengths = [rng.choice([rng.randint(1, 200), rng.randint(900, 3000), 1500]) for _ in range(40)]
    plan = _plan(enc, lengths)
    assert sorted(i for batch in plan for i in batch) == list(range(len(lengths)))
    effective = budget or enc._default_batch_tokens()
    for batch in plan:
        rows = [lengths[i] for i in batch]
        assert len(rows) <= batch_size
        assert len(rows) == 1 or max(rows) * len(rows) <= effective
        if max(rows) > encoder_module._PAD_FREE_ABOVE:  # long rows (images) are never padded
            assert len(set(rows)) == 1, rows


def test_long_rows_of_equal_length_share_a_batch_and_short_rows_pack(enc, configure):
    configure(batch_size=4, max_batch_tokens=100_000)
    lengths = [2000, 1500, 2000, 2000, 1500, 30, 25, 31, 10, 2]
    plan = [sorted(lengths[i] for i in batch) for batch in _plan(enc, lengths)]
    assert [2000, 2000, 2000] in plan and [1500, 1500] in plan
    assert [2, 10, 25, 30] in plan or [10, 25, 30, 31] in plan  # short texts are batched despite padding


def test_default_budget_depends_on_device_and_splits_long_rows(enc, configure, monkeypatch):
    import torch

    configure(batch_size=8, max_batch_tokens=None)
    assert enc._default_batch_tokens() == 1024  # CPU
    assert [len(b) for b in _plan(enc, [300] * 8)] == [3, 3, 2]
    monkeypatch.setattr(enc, "device", torch.device("cuda"))  # only the plan is computed: no GPU needed
    assert enc._default_batch_tokens() == 8 * 512
    assert [len(b) for b in _plan(enc, [1000] * 8)] == [4, 4]


@pytest.mark.parametrize("budget", [None, 60, 150])
def test_token_budget_batching_gives_unbatched_vectors(enc, configure, budget):
    texts = _texts(14, seed=budget or 1)
    configure(batch_size=5, max_batch_tokens=budget, preprocess_workers=2)
    batched = enc.embed_texts(texts)
    single = _one_by_one(enc, enc.embed_texts, texts, configure)
    np.testing.assert_allclose(batched, single, atol=2e-5)


def test_workers_and_window_prefetch_give_serial_vectors(enc, configure, monkeypatch):
    texts = _texts(11, seed=3)
    monkeypatch.setattr(encoder_module, "_WINDOW_BATCHES", 1)  # windows of batch_size items: prefetch is exercised
    configure(batch_size=3, preprocess_workers=2)
    pipelined = enc.embed_texts(texts)
    configure(preprocess_workers=0)
    serial = enc.embed_texts(texts)
    np.testing.assert_array_equal(pipelined, serial)  # same batches, same order of operations: bit-identical


def test_images_pipelined_equal_sizes_batched_match_one_at_a_time(enc, configure, monkeypatch):
    # Tiny replica images are short; lower the threshold so they take the no-padding path real images take.
    monkeypatch.setattr(encoder_module, "_PAD_FREE_ABOVE", 8)
    sizes = [(90, 60), (60, 90), (90, 60), (300, 100), (90, 60), (100, 300), (60, 90)]
    images = [draw_image(w, h, seed=i) for i, (w, h) in enumerate(sizes)]
    calls = []
    real_forward = enc._forward

    def spy(items):
        calls.append([len(it.input_ids) for it in items])
        return real_forward(items)

    monkeypatch.setattr(enc, "_forward", spy)
    configure(batch_size=4, max_batch_tokens=None, preprocess_workers=2)  # windows of 4: second window prefetched
    pipelined = enc.embed_images(images)
    assert all(len(set(rows)) == 1 for rows in calls), calls  # never padded
    assert any(len(rows) > 1 for rows in calls), calls  # equal token counts did share a batch
    calls.clear()
    single = _one_by_one(enc, enc.embed_images, images, configure)
    np.testing.assert_allclose(pipelined, single, atol=2e-5)


def test_padded_batches_run_without_mask_and_pool_each_rows_last_token(enc, configure, monkeypatch):
    seen = []
    real_model = enc.model

    class Spy:
        def __getattr__(self, name):
            return getattr(real_model, name)

        def __call__(self, **kwargs):
            seen.append((kwargs.get("attention_mask"), tuple(kwargs["input_ids"].shape)))
            return real_model(**kwargs)

    monkeypatch.setattr(enc, "model", Spy())
    monkeypatch.setattr(encoder_module, "_PAD_FREE_ABOVE", 10_000)  # let images of different sizes share a batch
    configure(batch_size=4, max_batch_tokens=None)
    texts = ["red cat", "a big dog runs along the river bank in the snow", "", "fresh bread on the table"]
    images = [draw_image(w, h, seed=i) for i, (w, h) in enumerate([(90, 60), (60, 200), (300, 90)])]
    batched = (enc.embed_texts(texts), enc.embed_images(images))
    assert [mask for mask, _ in seen] == [None, None]  # one forward each, never a mask
    assert [shape[0] for _, shape in seen] == [4, 3]  # and the rows really were padded together
    monkeypatch.setattr(enc, "model", real_model)
    np.testing.assert_allclose(batched[0], _one_by_one(enc, enc.embed_texts, texts, configure), atol=2e-5)
    np.testing.assert_allclose(batched[1], _one_by_one(enc, enc.embed_images, images, configure), atol=2e-5)


def test_preprocess_threads_only_use_cores_torch_leaves_idle(enc, monkeypatch):
    import torch

    monkeypatch.setattr(enc.config, "preprocess_workers", 3)
    monkeypatch.setattr(torch, "get_num_threads", lambda: 2)
    monkeypatch.setattr(encoder_module.os, "cpu_count", lambda: 2)
    assert enc._preprocess_workers() == 0
    monkeypatch.setattr(encoder_module.os, "cpu_count", lambda: 16)
    assert enc._preprocess_workers() == 3
    monkeypatch.setattr(encoder_module.os, "cpu_count", lambda: 4)
    assert enc._preprocess_workers() == 2


def test_bad_image_in_a_prefetched_window_is_named(enc, configure, tmp_path):
    configure(batch_size=2, preprocess_workers=2)
    bad = tmp_path / "broken.png"
    bad.write_bytes(b"not an image")
    images = [draw_image(40, 40, seed=i) for i in range(3)] + [str(bad)]
    with pytest.raises(E5VImageError, match="broken.png"):
        enc.embed_images(images)


def test_last_token_shortcut_equals_full_final_layer(enc, configure, monkeypatch):
    assert enc._shortcut is not None  # the replica's text model is Llama: the shortcut must be active
    monkeypatch.setattr(encoder_module, "_PAD_FREE_ABOVE", 10_000)  # also pad images together: 4D mask path
    configure(batch_size=4, max_batch_tokens=None)
    texts = _texts(6, seed=7)
    images = [draw_image(w, h, seed=i) for i, (w, h) in enumerate([(80, 50), (50, 80), (60, 60)])]
    shortcut_calls = []
    real_shortcut = last_token._last_layer_last_token
    monkeypatch.setattr(last_token, "_last_layer_last_token", lambda *a: shortcut_calls.append(1) or real_shortcut(*a))
    fast = (enc.embed_texts(texts), enc.embed_images(images), enc.embed_composed(images, ["make it red", "", "a"]))
    assert len(shortcut_calls) >= 3  # every forward took the shortcut
    monkeypatch.setattr(enc, "_shortcut", None)
    full = (enc.embed_texts(texts), enc.embed_images(images), enc.embed_composed(images, ["make it red", "", "a"]))
    for a, b in zip(fast, full, strict=True):
        np.testing.assert_allclose(a, b, atol=2e-5)


def test_model_outside_encoder_forward_is_untouched(enc):
    import torch

    ids = torch.tensor([enc.tokenizer(enc.prompts.for_text("a cat"))["input_ids"]])
    with torch.inference_mode():
        out = enc.model(input_ids=ids, use_cache=False).last_hidden_state
    assert out.shape[:2] == ids.shape  # every position computed: the pre-hook is inactive outside _forward
    np.testing.assert_allclose(
        torch.nn.functional.normalize(out[:, -1], dim=-1).numpy(), enc.embed_texts(["a cat"]), atol=2e-5
    )


def test_torchvision_image_processor_is_requested_only_when_it_imports(replica_path, monkeypatch):
    import importlib.abc
    import importlib.machinery
    import sys
    import types

    from transformers import LlavaNextProcessor

    seen = []
    real_load = LlavaNextProcessor.from_pretrained.__func__

    def spy(cls, *args, **kwargs):
        seen.append(kwargs.get("backend"))
        return real_load(cls, *args, **kwargs)

    class BrokenBuild(importlib.abc.MetaPathFinder, importlib.abc.Loader):
        """A torchvision whose import fails, as PyPI's build does beside the CPU torch file."""

        def find_spec(self, name, path=None, target=None):
            return importlib.machinery.ModuleSpec(name, self) if name == "torchvision" else None

        def create_module(self, spec):
            return None

        def exec_module(self, module):
            raise RuntimeError("operator torchvision::nms does not exist")

    monkeypatch.setattr(LlavaNextProcessor, "from_pretrained", classmethod(spy))
    for state in ("missing", "broken", "importable"):
        with monkeypatch.context() as m:
            if state == "missing":
                m.setitem(sys.modules, "torchvision", None)
            elif state == "broken":
                m.delitem(sys.modules, "torchvision", raising=False)
                m.setattr(sys, "meta_path", [BrokenBuild(), *sys.meta_path])
            else:
                m.setitem(sys.modules, "torchvision", types.ModuleType("torchvision"))
            with warnings.catch_warnings():
                warnings.simplefilter("ignore")
                # transformers checks torchvision itself and falls back to PIL when it is not really there
                E5VEncoder(replica_path, device="cpu", dtype="float32")
    assert seen == [None, None, "torchvision"]


# ---------------------------------------------------------------------------------------------- reuse_cpu_memory
class _FakeGlibc:
    """Records mallopt / malloc_trim calls and the thresholds in force, like glibc would hold them."""

    def __init__(self):
        self.thresholds = {cpu_memory.M_MMAP_THRESHOLD: 128 << 10, cpu_memory.M_TRIM_THRESHOLD: 128 << 10}
        self.trims = 0

    def mallopt(self, param, value):
        self.thresholds[param] = value
        return 1

    def malloc_trim(self, pad):
        self.trims += 1
        return 1


def test_reuse_cpu_memory_changes_no_vector(enc, configure):
    texts, images = _texts(9, seed=3), [draw_image(300 + 40 * i, 200, seed=i) for i in range(3)]
    configure(reuse_cpu_memory=False)
    plain = np.concatenate([enc.embed_texts(texts), enc.embed_images(images)])
    configure(reuse_cpu_memory=True)
    kept = np.concatenate([enc.embed_texts(texts), enc.embed_images(images)])
    np.testing.assert_allclose(kept, plain, atol=1e-6)


def test_thresholds_raised_for_every_forward_and_released_after_the_call(enc, configure, monkeypatch):
    fake = _FakeGlibc()
    monkeypatch.setattr(cpu_memory, "glibc", lambda: fake)
    configure(reuse_cpu_memory=True, batch_size=2)
    seen = []
    forward = enc._forward
    monkeypatch.setattr(enc, "_forward", lambda items: seen.append(dict(fake.thresholds)) or forward(items))
    enc.embed_texts(_texts(7, seed=1))
    assert len(seen) >= 4
    activations = 64 << 20  # well above any activation tensor of a forward pass on CPU here
    assert all(t[cpu_memory.M_MMAP_THRESHOLD] >= activations for t in seen)
    assert all(t[cpu_memory.M_TRIM_THRESHOLD] >= activations for t in seen)
    after = fake.thresholds
    assert after[cpu_memory.M_MMAP_THRESHOLD] <= 32 << 20  # glibc's own ceiling for its dynamic threshold
    assert after[cpu_memory.M_TRIM_THRESHOLD] <= 64 << 20
    assert fake.trims == 1  # what the call kept is handed back once, at its end


def test_thresholds_released_when_the_call_fails_and_untouched_when_off(enc, configure, monkeypatch):
    fake = _FakeGlibc()
    monkeypatch.setattr(cpu_memory, "glibc", lambda: fake)
    configure(reuse_cpu_memory=True, preprocess_workers=0)
    with pytest.raises(E5VImageError):
        enc.embed_images([draw_image(64, 64, seed=0), b"not an image"])
    assert fake.thresholds[cpu_memory.M_TRIM_THRESHOLD] <= 64 << 20 and fake.trims == 1
    configure(reuse_cpu_memory=False)
    before = dict(fake.thresholds)
    enc.embed_texts(_texts(3))
    assert fake.thresholds == before and fake.trims == 1


def test_overlapping_calls_release_once_when_the_last_one_ends(monkeypatch):
    fake = _FakeGlibc()
    monkeypatch.setattr(cpu_memory, "glibc", lambda: fake)
    with cpu_memory.freed_memory_kept():
        with cpu_memory.freed_memory_kept():
            pass
        assert fake.trims == 0 and fake.thresholds[cpu_memory.M_TRIM_THRESHOLD] > 64 << 20
    assert fake.trims == 1 and fake.thresholds[cpu_memory.M_TRIM_THRESHOLD] <= 64 << 20


_FAULTS_CHILD = """
import json, resource, sys, warnings
warnings.simplefilter("ignore")
from e5v_qdrant import E5VEncoder, cpu_memory as em
enc = E5VEncoder(sys.argv[1], device="cpu", dtype="float32", batch_size=1, preprocess_workers=0)
texts = [" ".join(["cat dog river street bread ticket invoice snow cabin flour"] * 30)] * 8  # 8 forward passes
libc = em.glibc()
result = {}
for reuse in (False, True):
    enc.config.reuse_cpu_memory = reuse
    libc.mallopt(em.M_MMAP_THRESHOLD, 128 << 10)  # glibc's initial thresholds
    libc.mallopt(em.M_TRIM_THRESHOLD, 128 << 10)
    libc.malloc_trim(0)
    enc.embed_texts(texts[:1])  # warm-up: lazy initialisation outside the count
    before = resource.getrusage(resource.RUSAGE_SELF).ru_minflt
    enc.embed_texts(texts)
    result[str(reuse)] = resource.getrusage(resource.RUSAGE_SELF).ru_minflt - before
print(json.dumps(result))
"""


@pytest.mark.slow
@pytest.mark.skipif(cpu_memory.glibc() is None, reason="needs glibc (mallopt)")
def test_reuse_cpu_memory_removes_most_page_faults(tmp_path):
    """The effect itself, on real glibc, in a fresh interpreter (a process's earlier allocations leave free chunks in
    the heap that would hide it): from glibc's initial thresholds, an embed call with the option on faults its working
    set in about once, while with it off every forward pass unmaps and refaults its activations."""
    import json
    import subprocess
    import sys

    from e5v_qdrant.testing import ReplicaSpec, build_replica

    path = build_replica(tmp_path / "replica", ReplicaSpec(hidden_size=128, intermediate_size=512))
    child = subprocess.run(
        [sys.executable, "-c", _FAULTS_CHILD, str(path)], capture_output=True, text=True, timeout=300, check=True
    )
    faults = json.loads(child.stdout.strip().splitlines()[-1])
    off, on = faults["False"], faults["True"]
    assert on * 3 < off, faults
