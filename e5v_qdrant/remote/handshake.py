"""The identity handshake: which vectors an endpoint makes, advertised by ``e5v-qdrant serve`` or declared by the user.

``e5v-qdrant serve`` lists its vector identity (``IDENTITY_KEY``: the fingerprint and the options in it) in
``/v1/models``; a client takes it as its own, after refusing any option the caller asked for that the server does not
serve. A foreign endpoint (vLLM) advertises nothing: the caller's options are the declared identity, the fingerprint is
computed from them (the dimension from one probe embedding) and records that it was declared, and by which endpoint.
Either way the store's usual checks then refuse to mix the endpoint's vectors with a collection of other vectors.
"""

from __future__ import annotations

import dataclasses
import os
from collections.abc import Callable, Mapping
from dataclasses import dataclass
from typing import Any

from ..config import EncoderConfig
from ..errors import E5VConfigError
from ..identity import fingerprint, folder_digest, vector_fields
from ..options import flag_of

__all__ = ["IDENTITY_KEY", "EndpointIdentity", "resolve_identity"]

#: Key of a ``/v1/models`` entry holding the vector identity ``e5v-qdrant serve`` advertises.
IDENTITY_KEY = "e5v_identity"
_DIGESTS = {"model": ("model_digest", ""), "adapter": ("adapter_digest", "adapter_")}


@dataclass
class EndpointIdentity:
    """The vectors an endpoint makes: the options they equal in-process, their fingerprint, and how that is known."""

    config: EncoderConfig
    fingerprint: dict[str, Any]
    served_model: str | None
    advertised: bool


def resolve_identity(
    models: Mapping[str, Any],
    *,
    config: EncoderConfig,
    required: Mapping[str, Any],
    url: str,
    probe_dim: Callable[[], int],
) -> EndpointIdentity:
    """The identity of the endpoint at ``url`` from its ``/v1/models`` answer.

    Args:
        models: the ``/v1/models`` JSON.
        config: the caller's options; a foreign endpoint's vectors are declared to be this config's.
        required: the options the caller asked for explicitly; an advertising server must serve each of them.
        probe_dim: embeds one probe input remotely and returns its size (called for a foreign endpoint only).

    Raises:
        E5VConfigError: the server serves other vectors than ``required`` asks (the message names each option), or a
            declared identity the endpoint cannot honour (vLLM serves only ``--image-layout llava-next``).
    """
    entries = [entry for entry in models.get("data") or [] if isinstance(entry, dict)]
    if not entries:
        raise E5VConfigError(f"{url}/v1/models lists no model; is --encoder-url an embedding server?")
    entry = next((e for e in entries if IDENTITY_KEY in e), entries[0])
    served = entry.get("id")
    advertised = entry.get(IDENTITY_KEY)
    if advertised is not None:
        options, record = advertised["options"], advertised["fingerprint"]
        conflicts = [
            f"{flag_of(_field(name))} {value!r} (asked) vs {options.get(name)!r} (served)"
            for name, value in required.items()
            if name in vector_fields() and not _same(name, value, options.get(name), record)
        ]
        if conflicts:
            raise E5VConfigError(
                f"the endpoint {url} serves other vectors than asked: {'; '.join(conflicts)}. Drop the option to use "
                "the endpoint's vectors, or point --encoder-url at a server started with it"
            )
        mine = {k: v for k, v in dataclasses.asdict(config).items() if k not in vector_fields()}
        served_config = EncoderConfig.from_options({**mine, **options})
        return EndpointIdentity(
            served_config, {**record, "endpoint": _endpoint(url, served, "advertised")}, served, True
        )
    if config.max_text_tokens is not None:
        raise E5VConfigError(
            f"the endpoint {url} advertises no E5-V identity and cannot truncate texts to max_text_tokens; drop "
            "--max-text-tokens or serve the model with `e5v-qdrant serve`"
        )
    if entry.get("owned_by") == "vllm" and config.image_layout != "llava-next":
        raise E5VConfigError(
            f"the endpoint {url} is vLLM, which lays images out as today's transformers does: declare "
            f"--image-layout llava-next (not {config.image_layout!r}); its vectors never join a paper-layout collection"
        )
    record = fingerprint(config, dim=probe_dim())
    endpoint = _endpoint(url, served, "declared") | {"owned_by": entry.get("owned_by")}
    return EndpointIdentity(config, {**record, "endpoint": endpoint}, served, False)


def _endpoint(url: str, served: str | None, how: str) -> dict[str, Any]:
    return {"url": url, "served_model": served, "identity": how}


def _field(name: str) -> dataclasses.Field:
    return next(f for f in dataclasses.fields(EncoderConfig) if f.name == name)


def _same(name: str, asked: Any, served: Any, record: Mapping[str, Any]) -> bool:
    """Whether the option asked equals the one served; a local folder counts by its files' digest."""
    if asked == served:
        return True
    if name in _DIGESTS and isinstance(asked, str) and os.path.isdir(asked):
        key, prefix = _DIGESTS[name]
        return record.get(key) == folder_digest(asked, prefix=prefix)
    return False
