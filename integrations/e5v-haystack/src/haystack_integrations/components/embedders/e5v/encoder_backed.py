"""``EncoderBacked``: what the three E5-V Haystack embedders share — encoder options, lazy loading, serialisation."""

from __future__ import annotations

import asyncio
import dataclasses
from typing import Any

from haystack import Document, default_from_dict

from e5v_qdrant.config import DEFAULT_MODEL, EncoderConfig
from e5v_qdrant.encoder import E5VEncoder
from e5v_qdrant.errors import E5VConfigError, E5VInputError
from e5v_qdrant.sharing import adapter_options, encoder_config, encoder_lock, shared_encoder

__all__ = ["EncoderBacked"]

# Init parameters that are EncoderConfig options of the same name, derived from their declaration
# (``sharing.adapter_options``: every option that changes vectors, plus device, dtype and batch size);
# ``encoder_kwargs`` carries any other option.
_OPTIONS = tuple(name for name in adapter_options() if name != "model")


class EncoderBacked:
    """Base of the E5-V embedders: holds the ``E5VEncoder`` options and loads the encoder in ``warm_up()``.

    Components with equal options share one loaded encoder (``e5v_qdrant.sharing.shared_encoder``), so a pipeline's
    query and document embedders hold the model once. ``None`` leaves an option at ``EncoderConfig``'s default.
    ``endpoint="http://gpu-box:8000"`` embeds through an E5-V endpoint (``e5v-qdrant serve`` or vLLM) instead of loading
    the model (``e5v_qdrant.remote.RemoteEncoder``; bearer key from ``$E5V_ENCODER_API_KEY``); options given must be
    what ``e5v-qdrant serve`` serves, and for vLLM they declare its vectors (``image_layout="llava-next"``).
    """

    def __init__(
        self,
        model: str = DEFAULT_MODEL,
        *,
        encoder_kwargs: dict[str, Any] | None = None,
        **options: Any,
    ):
        self.endpoint: str | None = options.pop("endpoint", None)
        unknown = sorted(set(options) - set(_OPTIONS))
        if unknown:
            raise E5VConfigError(
                f"{', '.join(unknown)}: not an option of {type(self).__name__}; its encoder options are "
                f"{', '.join(_OPTIONS)} (others go in encoder_kwargs: {', '.join(_passthrough())})"
            )
        self.model = str(model)
        for name in _OPTIONS:
            setattr(self, name, options.get(name))
        self.encoder_kwargs = dict(encoder_kwargs or {})
        self.encoder_config()  # validate now; the model itself loads in warm_up()
        self._encoder: E5VEncoder | None = None

    @classmethod
    def from_dict(cls, data: dict[str, Any]):
        """Build the component from ``to_dict()`` output (each component's ``to_dict`` lists its own options)."""
        return default_from_dict(cls, data)

    def encoder_config(self) -> EncoderConfig:
        """The validated ``EncoderConfig`` of these options.

        Raises:
            E5VConfigError: an invalid option, or one this e5v-qdrant's ``EncoderConfig`` does not have.
        """
        return encoder_config(self.model, {name: getattr(self, name) for name in _OPTIONS}, self.encoder_kwargs)

    def warm_up(self) -> None:
        """Load the encoder (or find it already loaded by a component with equal options). Idempotent."""
        if self._encoder is None and self.endpoint:
            from e5v_qdrant.remote import RemoteEncoder

            asked = {name: getattr(self, name) for name in _OPTIONS if getattr(self, name) is not None}
            asked |= {"model": self.model} if self.model != DEFAULT_MODEL else {}
            self._encoder = RemoteEncoder(self.endpoint, config=self.encoder_config(), required=asked)
        elif self._encoder is None:
            self._encoder = shared_encoder(self.encoder_config())

    async def warm_up_async(self) -> None:
        """``warm_up`` in a worker thread."""
        await asyncio.to_thread(self.warm_up)

    @property
    def encoder(self) -> E5VEncoder:
        """The loaded ``E5VEncoder`` (warms up on first access)."""
        self.warm_up()
        return self._encoder

    def _embed(self, method: str, *args: Any, **kwargs: Any) -> list[list[float]]:
        encoder = self.encoder
        with encoder_lock(encoder):
            return getattr(encoder, method)(*args, **kwargs).tolist()

    def _check_documents(self, documents: Any) -> None:
        if not isinstance(documents, list) or not all(isinstance(doc, Document) for doc in documents):
            raise E5VInputError(
                f"{type(self).__name__} input ({type(documents).__name__})",
                "expects a list of Documents; embed a query string with E5VTextEmbedder",
            )

    def _encoder_parameters(self) -> dict[str, Any]:
        """The init parameters of the options, for ``to_dict``."""
        return {
            "model": self.model,
            **{name: getattr(self, name) for name in _OPTIONS},
            "encoder_kwargs": self.encoder_kwargs,
            **({"endpoint": self.endpoint} if self.endpoint else {}),
        }


def _passthrough() -> list[str]:
    return [f.name for f in dataclasses.fields(EncoderConfig) if f.name not in ("model", *_OPTIONS)]
