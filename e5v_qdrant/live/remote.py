"""The other side of one owner, many clients: commands on a store folder held by a running server go through its
HTTP API (``POST /v1/ingest`` + ``GET /v1/jobs/{id}``, ``POST /v1/search``) instead of waiting for the lock.

The server records its address (and the name of its API key's environment variable, never the key) in the folder's
lock file (``store.edge.folder.record_holder_address``); ``RunningOwner.of`` reads it back.
"""

from __future__ import annotations

import base64
import dataclasses
import json
import mimetypes
import os
import sys
import time
import urllib.error
import urllib.request
from typing import Any

from ..config import IngestConfig, StoreConfig
from ..errors import E5VConfigError, E5VError
from ..points import SearchHit

__all__ = ["RunningOwner", "OwnerError", "RemoteReport", "SERVER_KEY_HELP"]

#: ``--server-api-key-env`` of the commands that go through a running server.
SERVER_KEY_HELP = (
    "when a running `e5v-qdrant serve` holds the store folder, this command goes through it: name of the "
    "environment variable holding its API key (default: the variable the server was started with)"
)


class OwnerError(E5VError):
    """The server holding the store refused or failed the request (its message says why)."""


@dataclasses.dataclass
class RemoteReport:
    """An ingest report made by the server: ``to_dict`` and ``summary`` are the run's own, as ``ingest`` prints them."""

    data: dict[str, Any]
    text: str
    exit_code: int

    def to_dict(self) -> dict[str, Any]:
        return self.data

    def summary(self) -> str:
        return self.text


class RunningOwner:
    """A server holding an embedded store folder, and its API key (``None``: it needs none)."""

    def __init__(self, url: str, key: str | None = None, *, timeout: float = 60.0):
        self.url, self.key, self.timeout = url.rstrip("/"), key, timeout

    @classmethod
    def of(cls, store: StoreConfig, key_env: str | None = None) -> RunningOwner | None:
        """The server holding ``store``'s folder, or ``None`` (a Qdrant server by URL, or no server holds it).

        Raises:
            E5VConfigError: the server needs a key and its environment variable is unset.
        """
        from ..store.edge.folder import read_holder

        path = store.resolved_path
        holder = read_holder(path) if path and os.path.isdir(path) else None
        if holder is None:
            return None
        key_env = key_env or holder["key_env"] or None
        key = os.environ.get(key_env) if key_env else None
        if key_env and not key:
            raise E5VConfigError(
                f"the server at {holder['address']} holding {path} needs its API key: export it in {key_env} "
                "(or name its variable with --server-api-key-env)"
            )
        return cls(holder["address"], key)

    def request(self, method: str, route: str, body: dict[str, Any] | None = None) -> dict[str, Any]:
        """One JSON request; an error answer becomes ``OwnerError`` with the server's message."""
        data = None if body is None else json.dumps(body).encode("utf-8")
        headers = {"Content-Type": "application/json"}
        if self.key:
            headers["Authorization"] = f"Bearer {self.key}"
        req = urllib.request.Request(self.url + route, data=data, headers=headers, method=method)
        try:
            with urllib.request.urlopen(req, timeout=self.timeout) as response:
                return json.loads(response.read())
        except urllib.error.HTTPError as exc:
            try:
                message = json.loads(exc.read())["error"]["message"]
            except Exception:  # noqa: BLE001 - not our JSON error body
                message = str(exc)
            raise OwnerError(f"the server at {self.url} holding the store refused: {message}") from None
        except urllib.error.URLError as exc:
            raise OwnerError(
                f"the server at {self.url} holds the store but does not answer ({exc.reason}); wait for it or stop it"
            ) from None

    def ingest(
        self,
        config: IngestConfig,
        encoder: dict[str, Any] | None = None,
        *,
        progress: bool | None = None,
        poll_s: float = 0.2,
    ) -> RemoteReport:
        """Run ``config`` as an ingest job of the server and wait for its report (the options that differ from the
        defaults are sent; paths are absolute paths of this machine, which the server shares). ``encoder``: the
        encoder options given; the server refuses them if they make other vectors than its model.

        Raises:
            OwnerError: the server refused the job (a path outside its ``--ingest-root``…) or the job failed.
        """
        defaults = IngestConfig(collection=config.collection)
        options = {
            f.name: getattr(config, f.name)
            for f in dataclasses.fields(IngestConfig)
            if f.name not in ("collection", "paths") and getattr(config, f.name) != getattr(defaults, f.name)
        }
        paths = [os.path.abspath(os.fspath(p)) for p in config.paths]
        body = {"collection": config.collection, "paths": paths, "options": options, "encoder": encoder or {}}
        job = self.request("POST", "/v1/ingest", body)
        show = sys.stderr.isatty() if progress is None else progress
        while job["state"] == "running":
            time.sleep(poll_s)
            job = self.request("GET", f"/v1/jobs/{job['id']}")
            if show:
                print(f"\r{self.url} {job['id']}: {job['files_done']} files", end="", file=sys.stderr, flush=True)
        if show:
            print(file=sys.stderr)
        if job["state"] != "done":
            raise OwnerError(f"ingest through the server at {self.url} failed: {job['error']}")
        return RemoteReport(job["report"], job["summary"], int(job["exit_code"]))

    def search(self, collection: str, *, text: str | None, image: str | None, **ranking: Any) -> list[SearchHit]:
        """``search.search`` through the server (``ranking``: ``SearchConfig`` fields, ``where`` as a mapping)."""
        body: dict[str, Any] = {"collection": collection, "text": text}
        if image is not None:
            with open(image, "rb") as fh:
                mime = mimetypes.guess_type(image)[0] or "image/png"
                body["image"] = f"data:{mime};base64,{base64.b64encode(fh.read()).decode('ascii')}"
        body.update({k: v for k, v in ranking.items() if v not in (None, {}, [])})
        found = self.request("POST", "/v1/search", body)["data"]
        return [
            SearchHit(h["score"], h["id"], h["modality"], h["source"], h["chunk_index"], h["snippet"], h.get("page"))
            for h in found
        ]
