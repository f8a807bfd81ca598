"""The final decoder layer for the pooled (last) position only: the encoder's one fast path tied to Llama internals.

Only the last position's final hidden state is read, so in the final layer every other position needs just its keys
and values; its queries, attention output, ``o_proj`` and MLP are dead work (one layer in ``num_hidden_layers``: ~3%
for E5-V's 32 layers, ~25% on a 4-layer test replica). A forward pre-hook on the final layer stops the model there
and hands over that layer's inputs; ``LastTokenShortcut.pooled`` then computes the layer and the final norm for each
row's pooled position. Outside ``pooled`` (training, other callers) the model runs untouched.

It reproduces transformers' ``LlamaDecoderLayer`` (pre-norm attention with rotary embeddings and grouped KV heads,
then the MLP) and is installed only on that architecture: anything else runs in full. The encoder's parity tests
compare its vectors with the authors' full forward.
"""

from __future__ import annotations

import threading
from typing import Any

__all__ = ["LastTokenShortcut"]


class _LastLayerInputs(Exception):
    """Raised by the final layer's pre-hook inside ``LastTokenShortcut.pooled``: carries that layer's inputs."""

    def __init__(self, hidden, kwargs):
        super().__init__("final decoder layer reached")
        self.hidden, self.kwargs = hidden, kwargs


class LastTokenShortcut:
    """Runs a LLaVA-NeXT base model with its final Llama layer computed for the pooled positions only.

    Example:
        >>> shortcut = LastTokenShortcut.install(base_model)             # doctest: +SKIP
        >>> hidden = shortcut.pooled(base_model, inputs, last)           # (batch, hidden) at positions ``last``
    """

    def __init__(self, model):
        self._state = threading.local()
        state = self._state

        def stop_before_last_layer(module, args, kwargs):
            if getattr(state, "active", False):
                raise _LastLayerInputs(args[0] if args else kwargs["hidden_states"], kwargs)

        model.language_model.layers[-1].register_forward_pre_hook(stop_before_last_layer, with_kwargs=True)

    @classmethod
    def install(cls, model) -> LastTokenShortcut | None:
        """Install on ``model`` (a ``LlavaNextModel``) if its language model is a plain Llama, else return ``None``."""
        lm = getattr(model, "language_model", None)
        layers = getattr(lm, "layers", None)
        if (
            type(lm).__name__ != "LlamaModel"
            or not layers
            or len(layers) != lm.config.num_hidden_layers
            or type(layers[-1]).__name__ != "LlamaDecoderLayer"
        ):
            return None
        return cls(model)

    def pooled(self, model, inputs: dict[str, Any], last):
        """Final hidden state (after the final norm) of each row at position ``last[row]``.

        Args:
            model: the model this shortcut was installed on.
            inputs: its forward keyword arguments (``input_ids``, ``position_ids``, images …), without a cache.
            last: a ``(batch,)`` long tensor of pooled positions.
        """
        import torch

        self._state.active = True
        try:
            hidden = model(**inputs, use_cache=False).last_hidden_state
            rows = torch.arange(hidden.shape[0], device=hidden.device)
            return hidden[rows, last]  # the hook did not fire (e.g. an empty model): nothing was skipped
        except _LastLayerInputs as stop:
            self._state.active = False
            return _last_layer_last_token(model.language_model, stop.hidden, stop.kwargs, last)
        finally:
            self._state.active = False


def _last_layer_last_token(lm, hidden, kwargs: dict[str, Any], last):
    """The final Llama layer + final norm for each row's pooled position ``last[row]`` only (keys/values for all)."""
    import torch
    from transformers.models.llama.modeling_llama import apply_rotary_pos_emb

    layer = lm.layers[-1]
    batch, length, _ = hidden.shape
    rows = torch.arange(batch, device=hidden.device)
    if kwargs.get("attention_mask") is not None:  # not produced by the encoder; run the layer in full to be safe
        return lm.norm(layer(hidden, **kwargs))[rows, last]
    attn = layer.self_attn
    x = layer.input_layernorm(hidden)
    q = attn.q_proj(x[rows, last][:, None]).view(batch, 1, -1, attn.head_dim).transpose(1, 2)
    k = attn.k_proj(x).view(batch, length, -1, attn.head_dim).transpose(1, 2)
    v = attn.v_proj(x).view(batch, length, -1, attn.head_dim).transpose(1, 2)
    cos, sin = kwargs["position_embeddings"]
    cos_q = cos.expand(batch, -1, -1)[rows, last][:, None]
    sin_q = sin.expand(batch, -1, -1)[rows, last][:, None]
    q, _ = apply_rotary_pos_emb(q, q, cos_q, sin_q)
    k, _ = apply_rotary_pos_emb(k, k, cos, sin)
    groups = attn.num_key_value_groups
    if groups > 1:
        k, v = k.repeat_interleave(groups, dim=1), v.repeat_interleave(groups, dim=1)
    mask = None
    if bool((last != length - 1).any()):  # shorter rows: their query must not see the right padding
        mask = (torch.arange(length, device=hidden.device)[None, :] <= last[:, None])[:, None, None, :]
    out = torch.nn.functional.scaled_dot_product_attention(q, k, v, attn_mask=mask, scale=attn.scaling)
    h = hidden[rows, last][:, None] + attn.o_proj(out.transpose(1, 2).reshape(batch, 1, -1))
    h = h + layer.mlp(layer.post_attention_layernorm(h))
    return lm.norm(h)[:, -1]
