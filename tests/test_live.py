"""Live collections (issue 29): `serve --watch` keeps a collection equal to a clean ingest of its folder.

Reference: a clean ``ingest`` of the same folder into a fresh second store, after every change (an independent
computation: the stock driver from nothing). Renames are checked against the model counter in ``/metrics``.
"""

from __future__ import annotations

import os
import re
import shutil
import time

import httpx
import numpy as np
import pytest

pytest.importorskip("fastapi")
uvicorn = pytest.importorskip("uvicorn")
pytest.importorskip("watchfiles")

from served import LiveServer, free_port  # noqa: E402

from e5v_qdrant.config import IngestConfig, ServeConfig, StoreConfig  # noqa: E402
from e5v_qdrant.ingest import ingest  # noqa: E402
from e5v_qdrant.live.config import LiveConfig  # noqa: E402
from e5v_qdrant.points import dense_vector  # noqa: E402
from e5v_qdrant.server import create_app  # noqa: E402
from e5v_qdrant.store import QdrantStore  # noqa: E402
from e5v_qdrant.testing import draw_image  # noqa: E402

DEADLINE_S = 60


def sentence(i: int, topic: str = "harbour") -> str:
    return f"Note {i}: the {topic} keeps record {i * 7} of boats, gulls and lighthouse keepers seen at dawn."


def points_of(store, collection: str) -> dict[str, tuple[dict, np.ndarray]]:
    """id -> (payload without the model fingerprint, dense vector) of every point of ``collection``."""
    physical = store.resolve(collection)
    if physical is None:
        return {}
    out = {}
    for record in store.scroll(physical, with_vectors=True):
        payload = dict(record.payload or {})
        payload.pop("model_fingerprint", None)
        out[str(record.id)] = (payload, np.asarray(dense_vector(record), dtype=np.float64))
    return out


def clean_points(encoder, folder, tmp_path, **options) -> dict:
    """The points a clean ingest of ``folder`` (or a list of folders; with ingest ``options``) into a fresh store
    writes."""
    path = tmp_path / f"clean-{time.monotonic_ns()}"
    paths = [str(f) for f in folder] if isinstance(folder, list) else [str(folder)]
    with QdrantStore(StoreConfig(qdrant_path=str(path))) as store:
        ingest(IngestConfig(collection="docs", paths=paths, **options), encoder, store, progress=False)
        points = points_of(store, "docs")
    shutil.rmtree(path)
    return points


def differences(live: dict, clean: dict) -> list[str]:
    problems = [f"missing {clean[i][0]['source']}" for i in clean.keys() - live.keys()]
    problems += [f"extra {live[i][0]['source']}" for i in live.keys() - clean.keys()]
    for i in live.keys() & clean.keys():
        (lp, lv), (cp, cv) = live[i], clean[i]
        if lp != cp:
            problems.append(f"payload of {cp['source']}#{cp.get('chunk_index')}")
        elif float(lv @ cv / np.linalg.norm(lv) / np.linalg.norm(cv)) < 0.999:
            problems.append(f"vector of {cp['source']}#{cp.get('chunk_index')}")
    return problems


def metric(client, name: str) -> float:
    text = client.get("/metrics").text
    found = re.search(rf"^{name} ([0-9.e+]+)$", text, re.M)
    return float(found.group(1)) if found else 0.0


def wait_in_sync(client, owner, encoder, folder, tmp_path, *, deadline_s: float = DEADLINE_S) -> dict:
    """Wait until the live collection equals a clean ingest of ``folder`` (and the watcher is idle); its status."""
    clean = clean_points(encoder, folder, tmp_path)
    deadline = time.monotonic() + deadline_s
    while True:
        status = client.get("/v1/collections/docs").json()
        problems = differences(points_of(owner.model_thread_store, "docs"), clean)
        if not problems and status["pending"] == 0 and status["ingesting"] == 0 and status["state"] == "watching":
            return status
        assert time.monotonic() < deadline, f"not in sync after {deadline_s} s: {problems[:5]}; status {status}"
        time.sleep(0.2)


@pytest.fixture()
def folder(tmp_path):
    root = tmp_path / "notes"
    root.mkdir()
    (root / "a.txt").write_text(" ".join(sentence(i) for i in range(6)))
    (root / "b.md").write_text("# Recipes\n\n" + " ".join(sentence(i, "kitchen") for i in range(4)))
    draw_image(80, 60, seed=1).save(root / "red.png")
    return root


@pytest.fixture()
def served(encoder, folder, tmp_path):
    store = QdrantStore(StoreConfig(qdrant_path=str(tmp_path / "live-store")))
    live = LiveConfig(watch=[str(folder)], collection="docs", watch_quiet_ms=300)
    ingest_options = IngestConfig(collection="docs", paths=[str(folder)])
    app = create_app(encoder, store=store, config=ServeConfig(max_wait_ms=2), live=live, ingest=ingest_options)
    with LiveServer(app) as server, httpx.Client(base_url=server.url, timeout=60) as client:
        yield client, app.state.owner
    store.close()


def test_watched_folder_equals_a_clean_ingest_after_every_change(served, encoder, folder, tmp_path):
    client, owner = served
    status = wait_in_sync(client, owner, encoder, folder, tmp_path)  # catch-up at start
    assert status["watched"] == [str(folder)] and status["failed"] == 0

    (folder / "c.txt").write_text(" ".join(sentence(i, "orchard") for i in range(5)))  # create
    (folder / "broken.png").write_bytes(b"\x89PNG\r\n\x1a\n not an image")
    status = wait_in_sync(client, owner, encoder, folder, tmp_path)
    assert status["failed"] == 1 and status["errors"][0]["source"] == str(folder / "broken.png")
    assert status["errors"][0]["error"]  # the reason, as ingest reports it

    before = status["totals"]
    with open(folder / "a.txt", "a") as fh:  # modify: a burst of appends is one change
        for i in range(5):
            fh.write(" " + sentence(100 + i, "harbour"))
            fh.flush()
            time.sleep(0.03)
    (folder / "broken.png").unlink()
    status = wait_in_sync(client, owner, encoder, folder, tmp_path)
    assert status["failed"] == 0
    assert status["totals"]["files_written"] - before["files_written"] == 1  # a.txt embedded once

    (folder / "b.md").unlink()  # delete
    wait_in_sync(client, owner, encoder, folder, tmp_path)

    embedded = metric(client, "e5v_ingest_embedded_items_total")
    assert embedded > 0
    os.rename(folder / "c.txt", folder / "c-renamed.txt")  # rename
    wait_in_sync(client, owner, encoder, folder, tmp_path)
    (folder / "sub").mkdir()
    os.rename(folder / "red.png", folder / "sub" / "red.png")  # move into a subfolder
    wait_in_sync(client, owner, encoder, folder, tmp_path)
    assert metric(client, "e5v_ingest_embedded_items_total") == embedded  # renames and moves run no model
    assert metric(client, "e5v_ingest_rekeyed_items_total") >= 6
    assert metric(client, "e5v_ingest_renamed_files_total") == 2

    before = client.get("/v1/collections/docs").json()["totals"]
    tmp = folder / ".goutputstream-XK2Q"  # an editor's save: write a temp file, rename it over the file
    tmp.write_text((folder / "a.txt").read_text().replace("Note 3:", "Note three:"))
    os.replace(tmp, folder / "a.txt")
    after = wait_in_sync(client, owner, encoder, folder, tmp_path)["totals"]
    assert after["files_written"] - before["files_written"] == 1  # one modification
    assert after["files_deleted"] == before["files_deleted"]  # not a delete + add
    assert 1 <= after["embedded"] - before["embedded"] <= 2  # only the changed chunk (and a boundary neighbour)

    shutil.rmtree(folder / "sub")  # a folder deleted
    outside = tmp_path / "private"
    outside.mkdir()
    (outside / "secret.txt").write_text("the secret is 4242")
    os.symlink(outside / "secret.txt", folder / "link.txt")  # a link leading outside: never read
    os.symlink(outside, folder / "linked-folder")
    wait_in_sync(client, owner, encoder, folder, tmp_path)
    sources = {p["source"] for p, _ in points_of(owner.model_thread_store, "docs").values()}
    assert not [s for s in sources if "link" in s or "secret" in s]

    burst = folder / "burst"
    burst.mkdir()
    for i in range(200):  # 200 files dropped at once
        (burst / f"n{i:03d}.txt").write_text(sentence(1000 + i, f"topic {i}"))
    status = wait_in_sync(client, owner, encoder, folder, tmp_path, deadline_s=180)
    assert status["points"] >= 200


# ---------------------------------------------------------------------- a real process: kill -9, one owner
def start_serve(cmd: list[str], log_path, url: str):
    import subprocess

    log = open(log_path, "a")
    proc = subprocess.Popen(cmd, stdout=log, stderr=subprocess.STDOUT, env={**os.environ, "PYTHONUNBUFFERED": "1"})
    deadline = time.monotonic() + 120
    while True:
        assert proc.poll() is None, open(log_path).read()[-3000:]
        try:
            if httpx.get(url + "/health", timeout=2).status_code == 200:
                return proc
        except httpx.TransportError:
            pass
        assert time.monotonic() < deadline, "server did not come up"
        time.sleep(0.2)


def serve_command(folder, qd, model, port, *extra) -> list[str]:
    from helpers import COMMON

    return [
        "serve", "--watch", str(folder), "--collection", "docs", "--qdrant-path", str(qd), "--model", str(model),
        "--port", str(port), "--watch-quiet-ms", "200", *COMMON, *map(str, extra),
    ]  # fmt: skip


@pytest.mark.slow
def test_kill_9_during_a_bulk_sync_then_restart_equals_a_clean_ingest(replica_path, encoder, tmp_path, capsys):
    import signal
    import sys

    import slow_writes

    from e5v_qdrant.cli import main

    folder = tmp_path / "notes"
    folder.mkdir()
    for i in range(80):
        (folder / f"n{i:03d}.txt").write_text(sentence(i, f"topic {i}"))
    qd, port = tmp_path / "store", free_port()
    url = f"http://127.0.0.1:{port}"
    slow = [*slow_writes.command(0.3), *serve_command(folder, qd, replica_path, port, "--batch-size", "2")]
    proc = start_serve(slow, tmp_path / "serve.log", url)
    try:
        deadline = time.monotonic() + 120
        while True:  # the catch-up is writing: some points stored, far from all
            answer = httpx.get(url + "/v1/collections/docs", timeout=10)
            if answer.status_code == 200 and answer.json()["points"] >= 10:
                break
            assert time.monotonic() < deadline, answer.text
            time.sleep(0.1)
        proc.send_signal(signal.SIGKILL)
        proc.wait(30)
    finally:
        if proc.poll() is None:
            proc.kill()
    # while it is down: deletions, a rename, an edit, a new file
    for i in range(0, 80, 9):
        (folder / f"n{i:03d}.txt").unlink()
    os.rename(folder / "n001.txt", folder / "renamed.txt")
    (folder / "n002.txt").write_text(sentence(2, "edited topic"))
    (folder / "new.txt").write_text(sentence(500, "late arrival"))

    roots = tmp_path / "roots"
    (roots / "more").mkdir(parents=True)
    (roots / "more" / "x.txt").write_text(sentence(900, "through the server"))
    proc = start_serve(
        [
            sys.executable,
            "-m",
            "e5v_qdrant.cli",
            *serve_command(folder, qd, replica_path, port, "--ingest-root", roots),
        ],
        tmp_path / "serve.log",
        url,
    )
    try:
        deadline = time.monotonic() + 120
        while True:
            status = httpx.get(url + "/v1/collections/docs", timeout=10).json()
            if status.get("state") == "watching" and status["pending"] == 0 and status["ingesting"] == 0:
                break
            assert time.monotonic() < deadline, status
            time.sleep(0.2)
        # one owner, many clients: ingest and search from the CLI go through the running server
        capsys.readouterr()
        assert main(["ingest", str(roots / "more"), "--collection", "more", "--qdrant-path", str(qd), "--json"]) == 0
        report = __import__("json").loads(capsys.readouterr().out)
        assert report["counts"]["new"] == 1 and report["counts"]["embedded"] == 1
        assert httpx.get(url + "/v1/collections/more", timeout=10).json()["points"] == 1  # visible at once
        assert main(["search", "through the server", "--collection", "more", "--qdrant-path", str(qd)]) == 0
        assert str(roots / "more" / "x.txt") in capsys.readouterr().out
        # a path outside the roots is refused, with the remedy; nothing is read
        assert main(["ingest", str(folder), "--collection", "more", "--qdrant-path", str(qd)]) == 2
        assert "--ingest-root" in capsys.readouterr().err
        # reingest cannot go through it: refused at once (not after the lock's retries), naming the server
        started = time.monotonic()
        assert (
            main(["reingest", "--collection", "docs", "--qdrant-path", str(qd), "--sparse-encoder", "qdrant-bm25"]) == 2
        )
        assert f"the server at {url} holds this store folder" in capsys.readouterr().err
        assert time.monotonic() - started < 5
        from e5v_qdrant.store.retry import StoreError

        with pytest.raises(StoreError, match=f"e5v-qdrant serve at {url}"):  # commands that cannot go through it
            QdrantStore(StoreConfig(qdrant_path=str(qd), retries=1, retry_wait=0.01))
        proc.send_signal(signal.SIGTERM)
        proc.wait(60)
    finally:
        if proc.poll() is None:
            proc.kill()
    with QdrantStore(StoreConfig(qdrant_path=str(qd))) as store:
        live = points_of(store, "docs")
    assert not differences(live, clean_points(encoder, folder, tmp_path, chunk_size=128, chunk_overlap=4))  # COMMON


def test_ingest_jobs_read_only_under_the_roots(served, tmp_path, folder):
    client, _ = served
    outside = tmp_path / "private"
    outside.mkdir()
    (outside / "secret.txt").write_text("the secret is 4242")
    for path in (str(outside), str(folder / ".." / "private"), "/etc"):
        answer = client.post("/v1/ingest", json={"collection": "other", "paths": [path]})
        assert answer.status_code == 403 and "--ingest-root" in answer.json()["error"]["message"], answer.text
    os.symlink(outside, folder / "escape")  # inside the root by name, outside by target
    answer = client.post("/v1/ingest", json={"collection": "other", "paths": [str(folder / "escape")]})
    assert answer.status_code == 403
    answer = client.post(
        "/v1/ingest", json={"collection": "other", "paths": [str(folder)], "options": {"follow_symlinks": True}}
    )
    assert answer.status_code == 400 and "follow_symlinks" in answer.json()["error"]["message"]
    assert client.get("/v1/jobs/job-999").status_code == 404
    other_layout = {"paper": "llava-next", "llava-next": "paper"}[served[1].encoder.config.image_layout]
    answer = client.post(
        "/v1/ingest", json={"collection": "other", "paths": [str(folder)], "encoder": {"image_layout": other_layout}}
    )
    assert answer.status_code == 400 and "image_layout" in answer.json()["error"]["message"]  # other vectors

    body = {"collection": "other", "paths": [str(folder)], "encoder": {"device": "cpu", "batch_size": 3}}
    job = client.post("/v1/ingest", json=body)  # options that do not change the vectors are fine
    assert job.status_code == 202, job.text
    deadline = time.monotonic() + DEADLINE_S
    while (state := client.get(f"/v1/jobs/{job.json()['id']}").json())["state"] == "running":
        assert time.monotonic() < deadline
        time.sleep(0.1)
    assert state["state"] == "done" and state["exit_code"] == 0, state
    counts = state["report"]["counts"]
    assert counts["new"] == 3 and counts["ignored"] == 1  # a.txt, b.md, red.png; the link is not followed
    assert state["files_done"] == 4
    assert "files: discovered 3, new 3" in state["summary"]
    assert client.get("/v1/collections/other").json()["points"] == state["report"]["counts"]["embedded"]


CHROMIUM, CHROMEDRIVER = "/usr/bin/chromium", "/usr/bin/chromedriver"


def test_search_page_shows_the_sync_status(served, folder, tmp_path):
    if not (os.path.exists(CHROMIUM) and os.path.exists(CHROMEDRIVER)):
        pytest.skip("needs Debian's chromium and chromium-driver: apt-get install -y chromium chromium-driver")
    webdriver = pytest.importorskip("selenium.webdriver")
    from selenium.webdriver.chrome.service import Service
    from selenium.webdriver.common.by import By
    from selenium.webdriver.support.ui import WebDriverWait

    client, _ = served
    options = webdriver.ChromeOptions()
    options.binary_location = CHROMIUM
    for flag in ("--headless", "--no-sandbox", "--disable-gpu", f"--user-data-dir={tmp_path / 'profile'}"):
        options.add_argument(flag)
    driver = webdriver.Chrome(service=Service(executable_path=CHROMEDRIVER), options=options)
    try:
        driver.get(str(client.base_url))
        line = lambda: driver.find_element(By.ID, "live")  # noqa: E731
        WebDriverWait(driver, DEADLINE_S).until(lambda d: "watching" in line().text and "failed 0" in line().text)
        assert str(folder) in line().text and "pending 0" in line().text
        (folder / "broken.png").write_bytes(b"not an image")
        WebDriverWait(driver, DEADLINE_S).until(lambda d: "failed 1" in line().text)
        assert "broken.png" in line().text and line().get_attribute("class") == "error"
    finally:
        driver.quit()


# ---------------------------------------------------------------------- the watcher alone
@pytest.mark.parametrize("polling", [False, True], ids=["events", "polling"])
def test_watcher_hands_over_a_burst_of_writes_once_the_folder_is_quiet(tmp_path, polling):
    from e5v_qdrant.live.watch import FolderWatcher

    (tmp_path / "store").mkdir()
    watcher = FolderWatcher([tmp_path], quiet_ms=400, force_polling=polling, ignore=[tmp_path / "store"])
    watcher.start()
    try:
        assert watcher.ready.wait(10)
        target = tmp_path / "log.txt"
        for i in range(8):  # a write every 100 ms: shorter gaps than the quiet period
            with open(target, "a") as fh:
                fh.write(f"line {i}\n")
            last_write = time.monotonic()
            (tmp_path / "store" / f"segment{i}").write_text("store files are not watched")
            time.sleep(0.1)
        changed = watcher.take(timeout=15)
        assert changed == {str(target)}  # the store folder's events are dropped
        if not polling:  # (a poller sees writes up to a poll late, later still on a busy machine)
            assert time.monotonic() - last_write >= 0.4 - 0.02  # handed over only once the writes had stopped
            assert watcher.take(timeout=1.5) == set()  # once
    finally:
        watcher.stop()


def test_a_hybrid_collection_keeps_its_keyword_vectors_through_a_rename(encoder, folder, tmp_path):
    from e5v_qdrant.points import sparse_vector

    def keywords(store) -> dict:
        physical = store.resolve("docs")
        return {
            str(r.id): (None if sparse_vector(r) is None else (list(sparse_vector(r).indices), sparse_vector(r).values))
            for r in store.scroll(physical, with_vectors=True)
        }

    store = QdrantStore(StoreConfig(qdrant_path=str(tmp_path / "live-store")))
    live = LiveConfig(watch=[str(folder)], collection="docs", watch_quiet_ms=300)
    options = IngestConfig(collection="docs", paths=[str(folder)], hybrid=True)
    app = create_app(encoder, store=store, config=ServeConfig(max_wait_ms=2), live=live, ingest=options)
    with LiveServer(app) as server, httpx.Client(base_url=server.url, timeout=60) as client:
        owner = app.state.owner
        deadline = time.monotonic() + DEADLINE_S
        while client.get("/v1/collections/docs").json().get("state") != "watching":  # caught up
            assert time.monotonic() < deadline
            time.sleep(0.1)
        os.rename(folder / "a.txt", folder / "renamed.txt")
        clean = tmp_path / "clean"
        with QdrantStore(StoreConfig(qdrant_path=str(clean))) as reference:
            ingest(
                IngestConfig(collection="docs", paths=[str(folder)], hybrid=True), encoder, reference, progress=False
            )
            expected = keywords(reference)
        deadline = time.monotonic() + DEADLINE_S
        while keywords(owner.model_thread_store) != expected:
            assert time.monotonic() < deadline, "keyword vectors differ from a clean hybrid ingest"
            time.sleep(0.2)
        assert sum(1 for k in expected.values() if k is not None) >= 2  # text points have keyword vectors
        assert metric(client, "e5v_ingest_rekeyed_items_total") >= 1
    store.close()


def test_a_watched_folder_that_goes_away_keeps_its_points_until_it_is_back(served, encoder, folder, tmp_path):
    client, owner = served
    wait_in_sync(client, owner, encoder, folder, tmp_path)
    kept = points_of(owner.model_thread_store, "docs")
    moved = tmp_path / "elsewhere"
    os.rename(folder, moved)  # an unmounted share looks like this too
    deadline = time.monotonic() + DEADLINE_S
    while (status := client.get("/v1/collections/docs").json())["state"] != "error":
        assert time.monotonic() < deadline, status
        time.sleep(0.2)
    assert str(folder) in status["error"] and "gone" in status["error"]
    assert points_of(owner.model_thread_store, "docs").keys() == kept.keys()  # nothing deleted
    os.rename(moved, folder)
    (folder / "back.txt").write_text(sentence(7, "return"))
    wait_in_sync(client, owner, encoder, folder, tmp_path)
    (folder / "later.txt").write_text(sentence(8, "events again"))  # followed again after it came back
    wait_in_sync(client, owner, encoder, folder, tmp_path)


def test_several_watched_folders_feed_one_collection(encoder, folder, tmp_path):
    second = tmp_path / "photos"
    second.mkdir()
    draw_image(50, 70, seed=5).save(second / "blue.png")
    store = QdrantStore(StoreConfig(qdrant_path=str(tmp_path / "live-store")))
    live = LiveConfig(watch=[str(folder), str(second)], collection="docs", watch_quiet_ms=300)
    options = IngestConfig(collection="docs", paths=[str(folder)])
    app = create_app(encoder, store=store, config=ServeConfig(max_wait_ms=2), live=live, ingest=options)
    with LiveServer(app) as server, httpx.Client(base_url=server.url, timeout=60) as client:
        owner = app.state.owner
        wait_in_sync(client, owner, encoder, [folder, second], tmp_path)
        embedded = metric(client, "e5v_ingest_embedded_items_total")
        os.rename(folder / "red.png", second / "red.png")  # a move between watched folders runs no model
        (second / "caption.txt").write_text(sentence(3, "photo album"))
        status = wait_in_sync(client, owner, encoder, [folder, second], tmp_path)
        assert status["watched"] == [str(folder), str(second)]
        assert metric(client, "e5v_ingest_embedded_items_total") - embedded == 1  # the caption only
    store.close()


def test_a_store_folder_inside_the_watched_folder_is_not_ingested(encoder, folder, tmp_path, monkeypatch):
    import e5v_qdrant.pipeline

    read = []
    real_read = e5v_qdrant.pipeline.read_source

    def recording_read(entry, *args, **kwargs):
        read.append(entry.source)
        return real_read(entry, *args, **kwargs)

    monkeypatch.setattr(e5v_qdrant.pipeline, "read_source", recording_read)
    monkeypatch.chdir(folder)
    store = QdrantStore(StoreConfig(qdrant_path="qdrant_data"))  # relative, inside the watched folder
    options = IngestConfig(collection="docs", paths=[str(folder)], exclude=["qdrant_data"])
    ingest(options, encoder, store, progress=False)  # the store has files (some without a type) when watching starts
    read.clear()
    live = LiveConfig(watch=[str(folder)], collection="docs", watch_quiet_ms=300)
    options = IngestConfig(collection="docs", paths=[str(folder)])
    app = create_app(encoder, store=store, config=ServeConfig(max_wait_ms=2), live=live, ingest=options)
    with LiveServer(app) as server, httpx.Client(base_url=server.url, timeout=60) as client:
        owner = app.state.owner
        (folder / "c.txt").write_text(sentence(4, "store beside"))
        deadline = time.monotonic() + DEADLINE_S
        while True:
            status = client.get("/v1/collections/docs").json()
            sources = {p["source"] for p, _ in points_of(owner.model_thread_store, "docs").values()}
            if str(folder / "c.txt") in sources and status["pending"] == 0 and status["state"] == "watching":
                break
            assert time.monotonic() < deadline, status
            time.sleep(0.2)
        assert sources == {str(folder / n) for n in ("a.txt", "b.md", "red.png", "c.txt")}
        assert not [path for path in read if "qdrant_data" in path]  # its files (some without a type) never opened
        events = metric(client, "e5v_ingest_events_total")
        time.sleep(1.5)  # the store's own writes are not events: no sync feeding itself
        assert metric(client, "e5v_ingest_events_total") == events
    store.close()
