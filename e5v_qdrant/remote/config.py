"""How to reach a remote E5-V endpoint (``--encoder-url`` and its companions), declared once for the CLI and the API."""

from __future__ import annotations

import os
from dataclasses import dataclass
from urllib.parse import urlsplit, urlunsplit

from ..errors import E5VConfigError
from ..options import Options, option

__all__ = ["EndpointConfig"]


def _check_url(url: str) -> None:
    parts = urlsplit(url)
    if parts.scheme not in ("http", "https") or not parts.netloc:
        raise E5VConfigError(f"--encoder-url {url!r} is not an http(s) URL; pass e.g. http://gpu-box:8000")


@dataclass
class EndpointConfig(Options):
    """An E5-V embedding endpoint: ``e5v-qdrant serve`` (it advertises its vector identity) or an OpenAI-compatible
    server such as vLLM (the identity is then declared with the model options)."""

    encoder_url: str | None = option(
        None,
        help="embed through this E5-V endpoint (`e5v-qdrant serve` or vLLM, e.g. http://gpu-box:8000) instead of "
        "loading the model in this process",
        metavar="URL",
        check=_check_url,
    )
    encoder_api_key_env: str = option(
        "E5V_ENCODER_API_KEY",
        help="environment variable holding the endpoint's bearer key (never read from argv, never printed)",
        metavar="VAR",
    )
    encoder_concurrency: int = option(4, help="embedding requests in flight to the endpoint at once")
    encoder_timeout: float = option(300.0, help="seconds before one embedding request times out")
    encoder_retries: int = option(
        6, help="retries of a request on 429/502/503/504 and connection errors, with exponential back-off"
    )
    texts_per_request: int = option(16, help="texts sent in one embedding request", cli=False)

    def validate(self) -> None:
        if self.encoder_url is not None:
            _check_url(self.encoder_url)
        if self.encoder_concurrency < 1:
            raise E5VConfigError(f"encoder_concurrency must be >= 1, got {self.encoder_concurrency}")
        if self.encoder_timeout <= 0:
            raise E5VConfigError(f"encoder_timeout must be > 0, got {self.encoder_timeout}")
        if self.encoder_retries < 0:
            raise E5VConfigError(f"encoder_retries must be >= 0, got {self.encoder_retries}")
        if self.texts_per_request < 1:
            raise E5VConfigError(f"texts_per_request must be >= 1, got {self.texts_per_request}")

    @property
    def api_key(self) -> str | None:
        """The bearer key read from ``encoder_api_key_env`` (never logged)."""
        return os.environ.get(self.encoder_api_key_env) or None

    @property
    def base_url(self) -> str:
        """``encoder_url`` without a trailing ``/v1`` or ``/``: requests go to ``{base_url}/v1/...``."""
        url = (self.encoder_url or "").rstrip("/")
        return url.removesuffix("/v1")

    @property
    def public_url(self) -> str:
        """``encoder_url`` without credentials, query or fragment: what a collection stamp records."""
        parts = urlsplit(self.base_url)
        host = parts.hostname or ""
        netloc = f"[{host}]" if ":" in host else host
        if parts.port:
            netloc += f":{parts.port}"
        return urlunsplit((parts.scheme, netloc, parts.path, "", ""))
