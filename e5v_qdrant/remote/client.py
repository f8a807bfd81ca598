"""HTTP to an embedding endpoint: one pooled ``httpx`` client, bearer key, timeouts and retries with back-off."""

from __future__ import annotations

import base64
import logging
from typing import Any

import numpy as np
from tenacity import Retrying, retry_if_exception, stop_after_attempt, wait_exponential

from ..errors import E5VError, E5VInputError
from .config import EndpointConfig

__all__ = ["EndpointClient", "RemoteEncoderError", "RETRIED_STATUS"]

logger = logging.getLogger(__name__)

#: Statuses that mean "busy or restarting, try again": the request is retried with exponential back-off.
RETRIED_STATUS = (429, 502, 503, 504)


class RemoteEncoderError(E5VError):
    """The embedding endpoint cannot be reached, refused the key, or kept failing after the retries."""


class _Retryable(Exception):
    def __init__(self, status: int, message: str):
        super().__init__(f"HTTP {status}: {message}")
        self.status = status


def _retryable(exc: BaseException) -> bool:
    import httpx

    return isinstance(exc, (_Retryable, httpx.TransportError))


class EndpointClient:
    """Requests to ``config.base_url``; thread-safe (one connection pool shared by the worker threads)."""

    def __init__(self, config: EndpointConfig):
        import httpx

        self.config = config
        headers = {"Authorization": f"Bearer {config.api_key}"} if config.api_key else {}
        limits = httpx.Limits(max_connections=config.encoder_concurrency + 1)
        self._http = httpx.Client(
            base_url=config.base_url, headers=headers, timeout=config.encoder_timeout, limits=limits
        )

    def close(self) -> None:
        self._http.close()

    def get(self, path: str) -> dict[str, Any]:
        return self._call("GET", path, None)

    def embeddings(self, body: dict[str, Any], what: str) -> np.ndarray:
        """POST ``body`` to ``/v1/embeddings``; the vectors in input order, ``float32``.

        Raises:
            E5VInputError: the endpoint refused this input (HTTP 400/413/422), naming ``what`` and its reason.
            RemoteEncoderError: unreachable, unauthorised, or failing after the retries.
        """
        data = self._call("POST", "/v1/embeddings", body, what=what)
        rows = sorted(data.get("data") or [], key=lambda row: row.get("index", 0))
        vectors = [_vector(row["embedding"]) for row in rows]
        if not vectors:
            raise RemoteEncoderError(f"{self.config.public_url} returned no embeddings for {what}")
        return np.stack(vectors)

    def _call(self, method: str, path: str, body: dict[str, Any] | None, *, what: str = "") -> dict[str, Any]:
        import httpx

        url = self.config.public_url
        retrying = Retrying(
            stop=stop_after_attempt(self.config.encoder_retries + 1),
            wait=wait_exponential(multiplier=0.5, max=30),
            retry=retry_if_exception(_retryable),
            reraise=True,
        )
        try:
            for attempt in retrying:
                with attempt:
                    response = self._http.request(method, path, json=body)
                    if response.status_code in RETRIED_STATUS:
                        logger.info("%s %s: HTTP %s, retrying", method, url + path, response.status_code)
                        raise _Retryable(response.status_code, _message(response))
        except _Retryable as exc:
            raise RemoteEncoderError(
                f"{url} kept answering {exc} after {self.config.encoder_retries} retries; the endpoint is overloaded "
                "or restarting: lower --encoder-concurrency or raise --encoder-retries"
            ) from None
        except httpx.TimeoutException:
            raise RemoteEncoderError(
                f"{url}{path} did not answer within {self.config.encoder_timeout} s ({self.config.encoder_retries} "
                "retries); raise --encoder-timeout or check the endpoint"
            ) from None
        except httpx.TransportError as exc:
            raise RemoteEncoderError(
                f"cannot reach the encoder endpoint {url} ({type(exc).__name__}: {exc}); check --encoder-url and that "
                "the server is running"
            ) from None
        if response.status_code in (401, 403):
            raise RemoteEncoderError(
                f"{url} refused the request (HTTP {response.status_code}); put its key in the environment variable "
                f"named by --encoder-api-key-env (now {self.config.encoder_api_key_env})"
            )
        if response.status_code in (400, 413, 422):
            raise E5VInputError(what or path, f"refused by {url}: {_message(response)}")
        if response.status_code >= 400:
            raise RemoteEncoderError(f"{url}{path} failed: HTTP {response.status_code}: {_message(response)}")
        try:
            return response.json()
        except ValueError:
            raise RemoteEncoderError(
                f"{url}{path} did not answer JSON; is --encoder-url an embedding server?"
            ) from None


def _message(response) -> str:
    try:
        error = response.json().get("error")
        text = error.get("message") if isinstance(error, dict) else (error or response.json().get("detail"))
    except (ValueError, AttributeError):
        text = None
    return str(text or response.text[:300] or response.reason_phrase)


def _vector(embedding: Any) -> np.ndarray:
    if isinstance(embedding, str):  # encoding_format="base64": little-endian float32
        return np.frombuffer(base64.b64decode(embedding), dtype="<f4").astype(np.float32)
    return np.asarray(embedding, dtype=np.float32)
