"""Ctrl-C and SIGTERM during `e5v-qdrant ingest` (a real child process): the write in progress is finished, the report
is written and printed, the exit status is 128 + the signal (130 / 143), and the same command run again resumes."""

from __future__ import annotations

import json
import signal
import subprocess
import time

import numpy as np
import pytest
import slow_writes
from helpers import edge_points_now, make_corpus, points_of, run_ingest


@pytest.mark.slow  # a child process must import torch and load the model before it can be interrupted
@pytest.mark.parametrize("sig", [signal.SIGINT, signal.SIGTERM], ids=["ctrl-c", "sigterm"])
def test_interrupted_ingest_reports_what_it_did_and_a_rerun_resumes(sig, tmp_path, replica_path):
    root = make_corpus(tmp_path / "corpus")
    clean_qd, qd = tmp_path / "clean", tmp_path / "qd"
    assert run_ingest([root], clean_qd, replica_path) == 0
    clean = points_of(clean_qd, vectors=True)
    assert len(clean) > 10

    report_file = tmp_path / "report.json"
    # each 2-point write waits 1 s: counting an Edge store (a folder copy) can take seconds on a busy machine, and a
    # signal that lands after the last write only waits for the writer to finish (the run is then complete: exit 0)
    cmd = slow_writes.slow_ingest(root, qd, replica_path, "--report", report_file, delay=1.0)
    proc = subprocess.Popen(cmd, stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True)
    try:
        deadline = time.monotonic() + 300  # the child loads torch and the model first: slow on a busy machine
        while edge_points_now(qd, "docs") < 2 and time.monotonic() < deadline and proc.poll() is None:
            time.sleep(0.05)
        assert proc.poll() is None, "the ingest finished before it could be interrupted"
        proc.send_signal(sig)
        out, err = proc.communicate(timeout=120)
    finally:
        if proc.poll() is None:
            proc.kill()
    assert proc.returncode == 128 + sig, err
    report = json.loads(report_file.read_text())
    assert report["interrupted"] == sig.name
    written = report["counts"]["points_written"]
    stored = points_of(qd)
    assert 2 <= written < len(clean) and len(stored) == written  # the report counts what is stored, no half batch
    assert out.startswith(f"interrupted ({sig.name}) after finishing the write in progress")
    assert f"written {written}" in out

    # the same command again: embeds only what is missing and ends equal to a clean run
    rerun_file = tmp_path / "rerun.json"
    assert run_ingest([root], qd, replica_path, "--report", str(rerun_file)) == 0
    rerun = json.loads(rerun_file.read_text())
    assert rerun["interrupted"] is None and rerun["counts"]["embedded"] == len(clean) - written
    resumed = points_of(qd, vectors=True)
    assert resumed.keys() == clean.keys()
    for pid, (payload, vector) in clean.items():
        assert resumed[pid][0] == payload
        np.testing.assert_allclose(resumed[pid][1], vector, atol=1e-5)
