"""Contrastive loss for E5-V fine-tuning: InfoNCE over the global batch, plain or with GradCache.

InfoNCE (the paper's, from SimCSE): for anchor ``i`` the logits are ``cos(a_i, p_j) / τ`` for every positive ``j``
and ``cos(a_i, n_k) / τ`` for every hard negative ``k`` in the *global* batch; the target is its own positive.

Multi-GPU: each rank embeds its slice of the batch; ``gather_with_grad`` concatenates every rank's embeddings (the
local slice keeps its autograd graph), every rank computes the loss over the whole global batch, so the gradient
w.r.t. its local embeddings is exact, and the trainer *sums* the LoRA gradients across ranks
(``all_reduce_gradients``). The result equals single-device training on the global batch.

GradCache (Gao et al., 2021, "Scaling Deep Contrastive Learning Batch Size under Memory Limited Setup"): embed the
batch in chunks without a graph, compute the loss and its gradient w.r.t. the embeddings, then re-embed chunk by chunk
with a graph and back-propagate the cached embedding gradients. Memory is bounded by one chunk's activations; the
gradient is the full batch's. Each chunk's RNG state is recorded in pass 1 and restored in pass 2, so dropout masks
match.
"""

from __future__ import annotations

from collections.abc import Callable, Sequence
from contextlib import contextmanager
from typing import Any

import torch
import torch.distributed as dist
import torch.nn.functional as F

__all__ = [
    "info_nce",
    "gather_with_grad",
    "contrastive_loss",
    "contrastive_backward",
    "all_reduce_gradients",
    "RngState",
]


def info_nce(
    anchors: torch.Tensor, positives: torch.Tensor, negatives: torch.Tensor | None, temperature: float
) -> torch.Tensor:
    """Mean cross-entropy of each anchor against all positives (+ all negatives), target = its own positive.

    Args:
        anchors, positives: ``(B, d)`` L2-normalised embeddings; row ``i`` of each is one pair.
        negatives: ``(B, d)`` hard negatives or ``None`` (pairs only: in-batch negatives).
        temperature: τ; logits are cosine / τ.
    """
    candidates = positives if negatives is None else torch.cat([positives, negatives], dim=0)
    logits = anchors @ candidates.T / temperature
    labels = torch.arange(anchors.shape[0], device=anchors.device)
    return F.cross_entropy(logits.float(), labels)


def _distributed() -> bool:
    return dist.is_available() and dist.is_initialized()


def gather_with_grad(x: torch.Tensor) -> torch.Tensor:
    """Concatenate ``x`` from every rank in rank order; only this rank's slice carries gradient.

    Without an initialised process group this returns ``x`` unchanged. Every rank must pass the same shape.
    """
    if not _distributed():
        return x
    world = dist.get_world_size()
    parts = [torch.empty_like(x) for _ in range(world)]
    dist.all_gather(parts, x.detach().contiguous())
    parts[dist.get_rank()] = x
    return torch.cat(parts, dim=0)


def contrastive_loss(embeddings: torch.Tensor, batch: int, has_negatives: bool, temperature: float) -> torch.Tensor:
    """InfoNCE over the global batch from this rank's stacked ``[anchors; positives; negatives]`` embeddings.

    Args:
        embeddings: ``(2B or 3B, d)``, rows ordered anchors, positives, then negatives (``B`` = local batch).
        batch: local batch size ``B``.
        has_negatives: whether the last ``B`` rows are hard negatives.
        temperature: τ.
    """
    anchors = gather_with_grad(embeddings[:batch])
    positives = gather_with_grad(embeddings[batch : 2 * batch])
    negatives = gather_with_grad(embeddings[2 * batch : 3 * batch]) if has_negatives else None
    return info_nce(anchors, positives, negatives, temperature)


class RngState:
    """The CPU and (current) CUDA generator states at one moment, restorable later."""

    def __init__(self, device: torch.device):
        self.device = device
        self.cpu = torch.get_rng_state()
        self.cuda = torch.cuda.get_rng_state(device) if device.type == "cuda" else None

    @contextmanager
    def restored(self):
        """Run the block with the generators set back to this state (the outside state is kept)."""
        devices = [self.device] if self.cuda is not None else []
        with torch.random.fork_rng(devices=devices, device_type=self.device.type if devices else "cuda"):
            torch.set_rng_state(self.cpu)
            if self.cuda is not None:
                torch.cuda.set_rng_state(self.cuda, self.device)
            yield


def contrastive_backward(
    embed: Callable[[Sequence[Any]], torch.Tensor],
    items: Sequence[Any],
    *,
    batch: int,
    has_negatives: bool,
    temperature: float,
    chunk_size: int | None,
    device: torch.device,
) -> torch.Tensor:
    """Compute the InfoNCE loss of one batch and accumulate its gradient into the trainable parameters.

    Args:
        embed: maps a list of prepared inputs to ``(n, d)`` normalised embeddings (with autograd when enabled).
        items: this rank's inputs, ``[anchors; positives; negatives]`` (``2B`` or ``3B`` of them).
        batch, has_negatives, temperature: see ``contrastive_loss``.
        chunk_size: GradCache chunk (inputs per forward pass); ``None`` or ``>= len(items)`` runs the plain loss
            (one forward over all inputs).
        device: where the model runs (for its RNG state).

    Returns:
        The detached loss (identical on every rank).
    """
    if not chunk_size or chunk_size >= len(items):
        loss = contrastive_loss(embed(items), batch, has_negatives, temperature)
        loss.backward()
        return loss.detach()
    chunks = [items[i : i + chunk_size] for i in range(0, len(items), chunk_size)]
    states: list[RngState] = []
    reps = []
    with torch.no_grad():  # pass 1: embeddings only, remembering each chunk's RNG state
        for chunk in chunks:
            states.append(RngState(device))
            reps.append(embed(chunk))
    cached = torch.cat(reps).detach().requires_grad_(True)
    loss = contrastive_loss(cached, batch, has_negatives, temperature)
    loss.backward()
    grads = cached.grad.split([len(c) for c in chunks])
    for chunk, state, grad in zip(chunks, states, grads, strict=True):  # pass 2: re-embed with graph, push cached grads
        with state.restored():
            emb = embed(chunk)
        emb.backward(grad.to(emb.dtype))
    return loss.detach()


def all_reduce_gradients(params: Sequence[torch.nn.Parameter]) -> None:
    """Sum gradients across ranks (each rank holds its local embeddings' share of the global loss gradient)."""
    if not _distributed():
        return
    grads = [p.grad for p in params if p.grad is not None]
    if not grads:
        return
    flat = torch.cat([g.reshape(-1) for g in grads])
    dist.all_reduce(flat, op=dist.ReduceOp.SUM)
    offset = 0
    for g in grads:
        g.copy_(flat[offset : offset + g.numel()].view_as(g))
        offset += g.numel()
