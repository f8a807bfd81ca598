"""Who can reach the server: the bearer key as clients will send it, and no unauthenticated bind beyond loopback."""

from __future__ import annotations

import ipaddress
import logging

from ..config import ServeConfig
from ..errors import E5VConfigError

__all__ = ["server_key", "check_exposure", "is_loopback"]

log = logging.getLogger(__name__)


def server_key(config: ServeConfig) -> str | None:
    """The bearer key clients must send, stripped of surrounding whitespace (a key exported with its trailing
    newline, ``export KEY=$(cat keyfile)``, would otherwise refuse every client); ``None`` without a key.

    Raises:
        E5VConfigError: the key variable is unset, empty or only whitespace.
    """
    key = config.api_key
    if key is None:
        return None
    key = key.strip()
    if not key:
        raise E5VConfigError(
            f"--server-api-key-env {config.api_key_env}: that environment variable holds only whitespace; export the key in it"
        )
    return key


def is_loopback(host: str) -> bool:
    """Whether binding ``host`` keeps the server on this machine (``localhost``, ``127.0.0.0/8``, ``::1``)."""
    if host.strip().lower() == "localhost":
        return True
    try:
        return ipaddress.ip_address(host.strip("[]")).is_loopback
    except ValueError:  # a host name (or "" = every interface): reachable from elsewhere as far as we know
        return False


def check_exposure(config: ServeConfig, key: str | None) -> None:
    """Refuse to serve without a key on a non-loopback address, unless ``allow_unauthenticated`` (then warn).

    Raises:
        E5VConfigError: ``config.host`` is not loopback, no key is set and ``allow_unauthenticated`` is off; the
            message names both ways out.
    """
    if key is not None or is_loopback(config.host):
        return
    if not config.allow_unauthenticated:
        raise E5VConfigError(
            f"--host {config.host} would serve embeddings and search to anyone who can reach this machine, without "
            "an API key; either set a key (export E5V_API_KEY=...; --server-api-key-env E5V_API_KEY, clients then send "
            "'Authorization: Bearer KEY'), or pass --allow-unauthenticated to serve without one on purpose"
        )
    log.warning(
        "serving on %s WITHOUT an API key (--allow-unauthenticated): anyone who can reach it can embed and search",
        config.host,
    )
