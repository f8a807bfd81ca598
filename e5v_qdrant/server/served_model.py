"""Which model `e5v-qdrant serve` loads (the options given, else those recorded in the collections it serves), and
the vector identity it advertises in ``/v1/models`` for remote encoders' handshake (``remote.handshake``)."""

from __future__ import annotations

import json
from collections.abc import Mapping
from typing import Any

from ..collection_model import encoder_config_for, recorded_encoder_options
from ..config import EncoderConfig
from ..errors import E5VConfigError
from ..identity import vector_options
from ..remote.handshake import IDENTITY_KEY

__all__ = ["served_encoder_config", "advertised_identity"]


def served_encoder_config(store, given: Mapping[str, Any]) -> EncoderConfig:
    """The ``EncoderConfig`` to serve ``store``'s collections with, as ``search`` picks one for a collection.

    Options in ``given`` (typed on the command line) win. Without a ``model`` among them, the model and the other
    vector options recorded in the collections' stamps are used when the collections agree on them; the defaults
    when no collection records any (or there is no store).

    Raises:
        E5VConfigError: the collections were built with different models or options and no ``model`` was given;
            the message lists them.
    """
    if store is None or "model" in given:
        return EncoderConfig.from_options(given)
    recorded = {alias: recorded_encoder_options(store, alias) for alias in sorted(store.aliases())}
    by_options: dict[str, list[str]] = {}
    for alias, options in recorded.items():
        if options:
            by_options.setdefault(json.dumps(options, sort_keys=True, default=str), []).append(alias)
    if not by_options:
        return EncoderConfig.from_options(given)
    if len(by_options) > 1:
        built = "; ".join(
            f"{', '.join(aliases)}: {recorded[aliases[0]].get('model')}" for aliases in by_options.values()
        )
        raise E5VConfigError(
            f"the collections of this store were built with different models or options ({built}); pass --model "
            "(and the options it was built with) to serve one of them, or serve each store separately"
        )
    return encoder_config_for(store, next(iter(by_options.values()))[0], **given)


def advertised_identity(encoder) -> dict[str, Any]:
    """The fields a ``/v1/models`` entry adds for ``encoder``: its fingerprint and the vector options in it, so a
    ``RemoteEncoder`` makes collections stamped exactly as an in-process encoder would and refuses mismatches."""
    return {IDENTITY_KEY: {"fingerprint": encoder.fingerprint, "options": vector_options(encoder.config)}}
