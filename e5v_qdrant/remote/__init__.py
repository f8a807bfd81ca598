"""Remote encoders: the ``E5VEncoder`` interface over an E5-V endpoint (``e5v-qdrant serve`` or vLLM).

``RemoteEncoder`` embeds through the endpoint (``encoder.py``) after the identity handshake (``handshake.py``);
``EndpointConfig`` declares how to reach it (``--encoder-url`` and companions); ``open_encoder`` picks the remote or
the in-process encoder for a command.

Example:
    >>> from e5v_qdrant.remote import RemoteEncoder
    >>> enc = RemoteEncoder("http://gpu-box:8000")                    # doctest: +SKIP
    >>> enc.fingerprint["endpoint"]["identity"]                        # doctest: +SKIP
    'advertised'
"""

from __future__ import annotations

from collections.abc import Mapping
from typing import TYPE_CHECKING, Any

from .config import EndpointConfig

if TYPE_CHECKING:
    from ..config import EncoderConfig
    from .client import RemoteEncoderError
    from .encoder import RemoteEncoder

__all__ = ["RemoteEncoder", "RemoteEncoderError", "EndpointConfig", "open_encoder"]


def open_encoder(config: EncoderConfig, endpoint: EndpointConfig, *, typed: Mapping[str, Any], load: bool = True):
    """The encoder a command embeds with: a ``RemoteEncoder`` when ``endpoint.encoder_url`` is set, else the
    in-process ``E5VEncoder`` (``load=False``: its ``config``, for commands that load the model only when needed).

    Args:
        config: the full options (typed, else recorded in the collection, else defaults): a foreign endpoint's
            declared identity.
        typed: the options given explicitly; an advertising endpoint must serve each of them.
    """
    if endpoint.encoder_url:
        from .encoder import RemoteEncoder

        return RemoteEncoder(endpoint, config=config, required=typed)
    if not load:
        return config
    from ..encoder import E5VEncoder

    return E5VEncoder(config=config)


def __getattr__(name: str):  # the HTTP client and numpy load only when a remote encoder is used
    if name == "RemoteEncoder":
        from .encoder import RemoteEncoder

        return RemoteEncoder
    if name == "RemoteEncoderError":
        from .client import RemoteEncoderError

        return RemoteEncoderError
    raise AttributeError(name)
