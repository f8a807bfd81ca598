"""Text-only LoRA fine-tuning of E5-V (the paper's recipe, with the exact inference prompt).

Only the language model is trained, on text triplets; the vision tower and projector are untouched, so images follow
the adapted text space (the paper's finding). ``finetune(FinetuneConfig(...))`` writes a PEFT adapter that
``E5VEncoder(adapter=DIR)`` applies, a ``manifest.json`` and ``metrics.json``, and optionally a merged checkpoint.

Modules: ``loss`` (InfoNCE, GradCache, cross-rank gather), ``train`` (the loop),
``export`` (manifest, merge); the triplet files are read by ``e5v_qdrant.triplets``.
"""

from __future__ import annotations

from ..config import FinetuneConfig
from ..triplets import FinetuneDataError, Triplet, TripletData, load_triplets
from .train import FinetuneResult, finetune, read_manifest, recall_at_1

__all__ = [
    "FinetuneConfig",
    "FinetuneDataError",
    "FinetuneResult",
    "Triplet",
    "TripletData",
    "finetune",
    "load_triplets",
    "read_manifest",
    "recall_at_1",
]
