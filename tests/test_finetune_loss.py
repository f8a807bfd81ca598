"""InfoNCE, GradCache and the cross-rank gather, on a LoRA-wrapped tiny replica (CPU, float32).

Tolerances: float32 on CPU; GradCache pads each chunk to its own longest row while the plain loss pads the whole
batch, so the two differ only by summation order — loss within 1e-5 relative, every LoRA gradient tensor within
1e-4 relative + 1e-5 * max|grad| absolute.
"""

from __future__ import annotations

import warnings

import numpy as np
import pytest
import torch
import torch.distributed as dist
import torch.multiprocessing as mp
from served import free_port

from e5v_qdrant.config import FinetuneConfig
from e5v_qdrant.finetune.loss import all_reduce_gradients, contrastive_backward, gather_with_grad, info_nce
from e5v_qdrant.finetune.train import _attach_lora, _load_encoder, _Tokens, embed_token_ids
from e5v_qdrant.testing import ReplicaSpec, build_replica

ANCHORS = [
    "a cat on the windowsill",
    "two dogs in a field",
    "bread and cheese",
    "the invoice was charged twice",
    "snow on the mountains",
    "a man rides a bicycle",
]
POSITIVES = [
    "a kitten by the window",
    "puppies running on grass",
    "a wooden table with food",
    "double billing",
    "a frozen lake and a cabin",
    "a cyclist in the city street",
]
NEGATIVES = ["a dog in the rain", "a cat asleep", "an empty fridge", "refund processed", "a hot beach", "a parked car"]


@pytest.fixture(scope="module", autouse=True)
def _one_thread():
    threads = torch.get_num_threads()
    torch.set_num_threads(1)  # tiny tensors: threads only add overhead (and the CPU is shared)
    yield
    torch.set_num_threads(threads)


@pytest.fixture(scope="module")
def train_replica(tmp_path_factory):
    return build_replica(tmp_path_factory.mktemp("ft-loss") / "e5v-tiny", ReplicaSpec(legacy_weight_names=True))


def _lora_model(replica, dropout: float):
    cfg = FinetuneConfig(
        train="unused",
        output="unused",
        model=str(replica),
        dtype="float32",
        device="cpu",
        lora_r=4,
        lora_alpha=8,
        lora_dropout=dropout,
    )
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")
        enc = _load_encoder(cfg, 0)
    peft_model = _attach_lora(enc, cfg)
    gen = torch.Generator().manual_seed(7)
    with torch.no_grad():  # LoRA B starts at zero (so A's gradient would be zero): give every factor a value
        for name, p in peft_model.named_parameters():
            if "lora_" in name:
                p.copy_(torch.randn(p.shape, generator=gen) * 0.05)
    tokens = _Tokens(enc)
    items = [tokens(t) for t in ANCHORS + POSITIVES + NEGATIVES]
    params = {n: p for n, p in peft_model.named_parameters() if p.requires_grad}

    def embed(ids):
        return embed_token_ids(enc.model, ids, enc.tokenizer.pad_token_id, enc.device)

    return enc, peft_model, items, params, embed


def _step(embed, items, params, chunk, seed=123):
    for p in params.values():
        p.grad = None
    torch.manual_seed(seed)
    loss = contrastive_backward(
        embed,
        items,
        batch=len(ANCHORS),
        has_negatives=True,
        temperature=0.05,
        chunk_size=chunk,
        device=torch.device("cpu"),
    )
    return float(loss), {n: p.grad.detach().clone() for n, p in params.items()}


def _assert_grads_close(a, b):
    assert a.keys() == b.keys() and len(a) > 0
    for name in a:
        scale = float(a[name].abs().max())
        assert scale > 0, f"{name} has no gradient"
        torch.testing.assert_close(b[name], a[name], rtol=1e-4, atol=1e-5 * scale, msg=lambda m, n=name: f"{n}: {m}")


def test_loss_matches_inference_embeddings(train_replica, tmp_path):
    """The training loss equals InfoNCE computed in numpy from E5VEncoder(adapter=...) vectors (independent path)."""
    from e5v_qdrant import E5VEncoder

    enc, peft_model, items, params, embed = _lora_model(train_replica, dropout=0.0)
    loss, _ = _step(embed, items, params, chunk=None)
    peft_model.save_pretrained(tmp_path / "adapter")
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")
        inference = E5VEncoder(train_replica, device="cpu", dtype="float32", adapter=str(tmp_path / "adapter"))
    a, p, n = (inference.embed_texts(x) for x in (ANCHORS, POSITIVES, NEGATIVES))
    logits = a @ np.concatenate([p, n]).T / 0.05
    logits -= logits.max(1, keepdims=True)
    expected = float(np.mean(np.log(np.exp(logits).sum(1)) - np.diag(logits[:, : len(ANCHORS)])))
    assert loss == pytest.approx(expected, rel=1e-4)
    assert loss > 0.1  # the batch is not trivially solved, so the comparison means something


def test_gradcache_equals_plain_loss(train_replica):
    enc, _, items, params, embed = _lora_model(train_replica, dropout=0.0)
    plain_loss, plain = _step(embed, items, params, chunk=None)
    for chunk in (1, 5, 7):
        cached_loss, cached = _step(embed, items, params, chunk=chunk)
        assert cached_loss == pytest.approx(plain_loss, rel=1e-5)
        _assert_grads_close(plain, cached)
    assert any("lora_A" in n for n in plain) and any("lora_B" in n for n in plain)
    assert all("language_model" in n or "layers" in n for n in plain)  # only the language model is trained


def test_gradcache_restores_dropout_rng(train_replica):
    """With dropout on, GradCache equals chunk-by-chunk backprop through a graph drawn from the same RNG stream;
    without restoring the RNG in pass 2 the masks (and gradients) would differ."""
    enc, _, items, params, embed = _lora_model(train_replica, dropout=0.3)
    chunk = 5

    def chunked_with_graph(ids):  # reference: the same chunks, same RNG order, but one graph over all of them
        return torch.cat([embed(ids[i : i + chunk]) for i in range(0, len(ids), chunk)])

    ref_loss, ref = _step(chunked_with_graph, items, params, chunk=None)
    cached_loss, cached = _step(embed, items, params, chunk=chunk)
    assert cached_loss == pytest.approx(ref_loss, rel=1e-5)
    _assert_grads_close(ref, cached)
    other_loss, _ = _step(embed, items, params, chunk=chunk, seed=124)  # dropout is really on
    assert other_loss != pytest.approx(ref_loss, rel=1e-4)


def test_gather_path_single_process_group(train_replica):
    """With a (1-rank gloo) process group the gather + gradient all-reduce path runs and changes nothing."""
    enc, _, items, params, embed = _lora_model(train_replica, dropout=0.0)
    plain_loss, plain = _step(embed, items, params, chunk=None)
    dist.init_process_group("gloo", rank=0, world_size=1, init_method=f"tcp://127.0.0.1:{free_port()}")
    try:
        x = torch.randn(3, 4, requires_grad=True)
        g = gather_with_grad(x)
        (g * torch.arange(12.0).view(3, 4)).sum().backward()
        assert torch.equal(g, x) and torch.equal(x.grad, torch.arange(12.0).view(3, 4))
        loss, grads = _step(embed, items, params, chunk=4)
        all_reduce_gradients(list(params.values()))
        grads = {n: p.grad for n, p in params.items()}
    finally:
        dist.destroy_process_group()
    assert loss == pytest.approx(plain_loss, rel=1e-5)
    _assert_grads_close(plain, grads)


# ------------------------------------------------------------- two real ranks (gloo, CPU) on a linear "encoder"
_DIM_IN, _DIM_OUT, _BATCH, _WORLD = 6, 4, 8, 2


def _linear_encoder():
    torch.manual_seed(0)
    return torch.nn.Linear(_DIM_IN, _DIM_OUT)


def _global_inputs():
    gen = torch.Generator().manual_seed(1)
    return torch.randn(3 * _BATCH, _DIM_IN, generator=gen)  # rows: anchors, positives, negatives


def _rank_worker(rank: int, init: str, out: str) -> None:
    dist.init_process_group("gloo", rank=rank, world_size=_WORLD, init_method=init)
    try:
        model, x, b = _linear_encoder(), _global_inputs(), _BATCH // _WORLD
        local = [x[k * _BATCH + rank * b : k * _BATCH + (rank + 1) * b] for k in range(3)]
        items = list(torch.cat(local))
        loss = contrastive_backward(
            lambda rows: torch.nn.functional.normalize(model(torch.stack(list(rows))), dim=-1),
            items,
            batch=b,
            has_negatives=True,
            temperature=0.05,
            chunk_size=3,
            device=torch.device("cpu"),
        )
        all_reduce_gradients(list(model.parameters()))
        torch.save({"loss": loss, "weight": model.weight.grad, "bias": model.bias.grad}, f"{out}.{rank}")
    finally:
        dist.destroy_process_group()


def test_two_ranks_equal_one_device_on_global_batch(tmp_path):
    """Two gloo ranks, each embedding half the batch (GradCache chunks), gather embeddings and sum gradients:
    loss and gradients equal one process on the whole batch."""
    init = f"file://{tmp_path / 'rendezvous'}"
    mp.spawn(_rank_worker, args=(init, str(tmp_path / "grads")), nprocs=_WORLD, join=True)
    model, x = _linear_encoder(), _global_inputs()
    emb = torch.nn.functional.normalize(model(x), dim=-1)
    loss = info_nce(emb[:_BATCH], emb[_BATCH : 2 * _BATCH], emb[2 * _BATCH :], 0.05)
    loss.backward()
    for rank in range(_WORLD):
        got = torch.load(tmp_path / f"grads.{rank}", weights_only=True)
        assert float(got["loss"]) == pytest.approx(float(loss.detach()), rel=1e-5)
        torch.testing.assert_close(got["weight"], model.weight.grad, rtol=1e-4, atol=1e-6)
        torch.testing.assert_close(got["bias"], model.bias.grad, rtol=1e-4, atol=1e-6)
