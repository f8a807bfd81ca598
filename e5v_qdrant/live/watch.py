"""Follow file-system events under some folders (``watchfiles``: inotify / FSEvents / ReadDirectoryChangesW, with a
polling fallback for network mounts) and hand the changed paths, debounced, to a callback.

Events are reduced to paths: what changed is decided by looking at the folder (``FolderSync.sync``), so a rename
(deleted + added), an editor's save-by-rename (temp written, renamed over the file) or a burst of writes to one file
all become "these paths changed", synced once after the folder has been quiet for ``quiet_ms``.
"""

from __future__ import annotations

import logging
import os
import threading
import time
from collections.abc import Callable, Iterable

__all__ = ["FolderWatcher"]

logger = logging.getLogger(__name__)

#: How often the polling fallback looks at the folders.
_POLL_MS = 300


class FolderWatcher:
    """Collect changed paths under ``roots`` on a thread; ``take()`` returns them once the folders are quiet.

    Args:
        roots: folders (or files) to watch, recursively.
        quiet_ms: a change is handed over only after no event for this long (a burst of writes is one change); when
            polling, at least two polls (600 ms).
        force_polling: poll instead of using OS events (network mounts, some containers); ``None`` = watchfiles'
            choice (``WATCHFILES_FORCE_POLLING``, WSL).
        ignore: paths whose events are dropped (the store folder, when it lies inside a watched folder).
        on_event: called with the number of events of each batch (metrics).
    """

    def __init__(
        self,
        roots: Iterable[str],
        *,
        quiet_ms: float = 500,
        force_polling: bool | None = None,
        ignore: Iterable[str] = (),
        on_event: Callable[[int], None] | None = None,
    ):
        self.roots = [os.path.abspath(r) for r in roots]
        # polling sees a change up to one poll late: quiet for two polls, or a burst may be handed over in pieces
        self.quiet = max(quiet_ms, 2 * _POLL_MS if force_polling else 0) / 1000.0
        self.force_polling = force_polling
        self.ignore = [os.path.abspath(p) for p in ignore]
        self.on_event = on_event
        self.stop_event = threading.Event()
        self.ready = threading.Event()  # the watch is set up: events from now on are seen
        self._changed: set[str] = set()
        self._last = 0.0
        self._cond = threading.Condition()
        self._thread = threading.Thread(target=self._watch, name="e5v-watch", daemon=True)

    def start(self) -> None:
        self._thread.start()

    def stop(self) -> None:
        self.stop_event.set()
        with self._cond:
            self._cond.notify_all()
        self._thread.join(10)

    @property
    def pending(self) -> set[str]:
        """Changed paths not yet taken."""
        with self._cond:
            return set(self._changed)

    def take(self, timeout: float | None = None) -> set[str]:
        """Wait (up to ``timeout`` s) for changes and for ``quiet_ms`` without events; return and clear them (empty
        on timeout or stop)."""
        deadline = None if timeout is None else time.monotonic() + timeout
        with self._cond:
            while not self.stop_event.is_set():
                now = time.monotonic()
                if self._changed and now - self._last >= self.quiet:
                    changed, self._changed = self._changed, set()
                    return changed
                wait = self.quiet - (now - self._last) if self._changed else None
                if deadline is not None:
                    left = deadline - now
                    if left <= 0:
                        return set()
                    wait = left if wait is None else min(wait, left)
                self._cond.wait(wait)
        return set()

    def _keep(self, change, path: str) -> bool:
        """Drop events under ``ignore``, and a folder's own "modified" (polling reports its mtime): what changed in
        it has events of its own, and a folder as a changed path would re-plan all of it."""
        import watchfiles

        if change == watchfiles.Change.modified and os.path.isdir(path):
            return False
        return not any(path == p or path.startswith(p.rstrip(os.sep) + os.sep) for p in self.ignore)

    def _watch(self) -> None:
        import watchfiles

        while not self.stop_event.is_set():
            try:
                # step: group events arriving within 50 ms; the quiet period above does the real debouncing
                for changes in watchfiles.watch(
                    *self.roots,
                    watch_filter=self._keep,
                    debounce=1600,
                    step=50,
                    stop_event=self.stop_event,
                    rust_timeout=500,
                    yield_on_timeout=True,
                    raise_interrupt=False,
                    force_polling=self.force_polling,
                    poll_delay_ms=_POLL_MS,
                    ignore_permission_denied=True,
                ):
                    self.ready.set()
                    if not changes:
                        continue
                    with self._cond:
                        self._changed |= {os.path.abspath(path) for _, path in changes}
                        self._last = time.monotonic()
                        self._cond.notify_all()
                    if self.on_event is not None:
                        self.on_event(len(changes))
            except Exception:  # noqa: BLE001 - a watched folder vanished or the OS watch failed: retry
                logger.exception("watching %s failed; retrying in 1 s", ", ".join(self.roots))
                time.sleep(1)
