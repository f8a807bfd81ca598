"""Errors of the store and their classification: what a retry may fix (tenacity back-off) and what it never will."""

from __future__ import annotations

import logging
import sqlite3

from tenacity import Retrying, retry_if_exception, stop_after_attempt, wait_exponential

from ..config import StoreConfig
from ..errors import E5VError

__all__ = ["StoreError", "is_transient", "describe_error", "retrying"]

logger = logging.getLogger("e5v_qdrant.store")


class StoreError(E5VError, RuntimeError):
    """Qdrant refused a request for a reason retrying will not fix (bad request, bad config, missing collection)."""


_TRANSIENT_STATUS = {408, 425, 429, 500, 502, 503, 504}


def is_transient(exc: BaseException) -> bool:
    """True for errors a retry may fix: timeouts, connection resets, 5xx / 429, gRPC UNAVAILABLE, lock contention."""
    from qdrant_client.http.exceptions import ResponseHandlingException, UnexpectedResponse

    if isinstance(exc, UnexpectedResponse):
        return exc.status_code is None or exc.status_code in _TRANSIENT_STATUS
    if isinstance(exc, (ResponseHandlingException, ConnectionError, TimeoutError)):
        return True
    if isinstance(exc, sqlite3.OperationalError):
        return "locked" in str(exc) or "busy" in str(exc)
    if isinstance(exc, RuntimeError) and "already accessed by another instance" in str(exc):
        return True  # embedded store folder held by another process
    try:
        import httpx

        if isinstance(exc, (httpx.TransportError, httpx.TimeoutException)):
            return True
    except ImportError:  # pragma: no cover
        pass
    try:
        import grpc

        if isinstance(exc, grpc.RpcError) and hasattr(exc, "code"):
            return exc.code() in (
                grpc.StatusCode.UNAVAILABLE,
                grpc.StatusCode.DEADLINE_EXCEEDED,
                grpc.StatusCode.RESOURCE_EXHAUSTED,
                grpc.StatusCode.ABORTED,
            )
    except ImportError:  # pragma: no cover
        pass
    return False


def describe_error(exc: BaseException) -> str:
    from qdrant_client.http.exceptions import UnexpectedResponse

    if isinstance(exc, UnexpectedResponse):
        body = (exc.content or b"")[:300].decode("utf-8", "replace")
        return f"HTTP {exc.status_code} {exc.reason_phrase}: {body}".strip()
    return f"{type(exc).__name__}: {exc}"


def retrying(config: StoreConfig, what: str) -> Retrying:
    def log_retry(state) -> None:
        exc = state.outcome.exception() if state.outcome else None
        logger.warning(
            "retrying %s after transient error (attempt %d of %d, next in %.2fs): %s",
            what,
            state.attempt_number,
            config.retries,
            state.next_action.sleep if state.next_action else 0.0,
            describe_error(exc) if exc else "?",
        )

    return Retrying(
        stop=stop_after_attempt(config.retries),
        wait=wait_exponential(multiplier=config.retry_wait, max=30),
        retry=retry_if_exception(is_transient),
        before_sleep=log_retry,
        reraise=True,
    )
