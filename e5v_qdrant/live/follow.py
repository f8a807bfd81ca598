"""``LiveFolders``: catch up, then follow the events of the watched folders, on a thread of its own."""

from __future__ import annotations

import logging
import threading
from collections.abc import Callable, Iterable

from ..errors import E5VInputError
from .sync import FolderSync
from .watch import FolderWatcher

__all__ = ["LiveFolders"]

logger = logging.getLogger(__name__)


class LiveFolders:
    """Keep ``sync``'s collection in step with its folders: a full stat-only sync at start (changes and deletions
    made while nothing watched are applied), then one sync per quiet batch of changed paths.

    A sync that fails (the store refused a write) is logged, shown in the status (``state`` ``error``), and retried
    as a full sync after ``retry_s``.

    Args:
        sync: the collection's ``FolderSync``.
        quiet_ms, force_polling, ignore, on_event: see ``FolderWatcher``.
    """

    def __init__(
        self,
        sync: FolderSync,
        *,
        quiet_ms: float = 500,
        force_polling: bool | None = None,
        ignore: Iterable[str] = (),
        on_event: Callable[[int], None] | None = None,
        retry_s: float = 5.0,
    ):
        self.sync = sync
        self.status = sync.status
        self.retry_s = retry_s
        self.watcher = FolderWatcher(
            sync.config.paths, quiet_ms=quiet_ms, force_polling=force_polling, ignore=ignore, on_event=on_event
        )
        self._thread = threading.Thread(target=self._follow, name=f"e5v-live-{sync.config.collection}", daemon=True)

    def start(self) -> None:
        self.watcher.start()
        self._thread.start()

    def stop(self) -> None:
        """Stop watching; the sync in progress finishes first (its writes are never cut in half)."""
        self.watcher.stop()
        self._thread.join()
        with self.status.lock:
            self.status.state = "stopped"

    def to_dict(self) -> dict:
        """The status (``SyncStatus.to_dict``) with ``pending`` = changed paths not yet taken by a sync."""
        return {**self.status.to_dict(), "pending": len(self.watcher.pending)}

    def _set(self, state: str, error: str = "") -> None:
        with self.status.lock:
            self.status.state, self.status.error = state, error

    def _follow(self) -> None:
        self.watcher.ready.wait(30)  # events from here on are collected while the catch-up runs
        full = True
        stop = self.watcher.stop_event
        while not stop.is_set():
            paths = None if full else self.watcher.take(timeout=1.0)
            if not full and not paths:
                continue
            self._set("catching up" if full else "syncing")
            try:
                counts = self.sync.sync(None if full else paths)
                logger.info("synced %s: %s", self.sync.config.collection, counts)
                full = False
                self._set("watching")
            except E5VInputError as exc:  # a watched folder is gone: wait for it
                logger.warning("not syncing %s: %s; retrying in %.0f s", self.sync.config.collection, exc, self.retry_s)
                self._set("error", str(exc))
                full = True
                stop.wait(self.retry_s)
            except Exception as exc:  # noqa: BLE001 - the server stays up; the next full sync retries
                logger.exception("syncing %s failed; retrying in %.0f s", self.sync.config.collection, self.retry_s)
                self._set("error", f"{type(exc).__name__}: {exc}")
                full = True
                stop.wait(self.retry_s)
