"""Ingest a real messy folder twice (first run, re-run) with one or more checkouts of this package; print a table.

Measures what a new user meets on a folder nobody here wrote (issue 19): wall time of the first run and of a re-run
that has nothing to embed, the exit code and the length of the printed summary. Each checkout runs in its own
subprocess with its own embedded store, one after the other, the same tree and the same model.

Usage (a tiny replica stands in for the 16 GB model: the vectors are random, the file handling is real):

    python -c "from e5v_qdrant.testing import build_replica; build_replica('/tmp/tiny')"
    nice python benchmarks/messy_folder.py /usr/share/doc --model /tmp/tiny --checkout before=/tmp/old --checkout after=.
"""

from __future__ import annotations

import argparse
import os
import resource
import subprocess
import sys
import tempfile
import time


def run(checkout: str, tree: str, model: str, store: str, timeout: float) -> dict:
    cmd = [sys.executable, "-m", "e5v_qdrant.cli", "ingest", tree, "--collection", "docs", "--qdrant-path", store]
    cmd += ["--model", model, "--device", "cpu", "--dtype", "float32", "--no-progress"]
    env = {**os.environ, "PYTHONPATH": os.path.abspath(checkout)}
    started, cpu = time.perf_counter(), _children_cpu()
    try:
        proc = subprocess.run(cmd, env=env, capture_output=True, text=True, timeout=timeout)
        code, out, err = proc.returncode, proc.stdout, proc.stderr
    except subprocess.TimeoutExpired as exc:
        code, out, err = "timeout", exc.stdout or "", exc.stderr or ""
        out, err = (x.decode() if isinstance(x, bytes) else x for x in (out, err))
    return {
        "seconds": time.perf_counter() - started,
        "cpu_seconds": _children_cpu() - cpu,  # robust on a shared machine, where wall time mostly measures others
        "exit": code,
        "stdout_lines": len(out.splitlines()),
        "stderr_lines": len(err.splitlines()),
        "last_stderr": (err.strip().splitlines() or [""])[-1][:100],
    }


def _children_cpu() -> float:
    usage = resource.getrusage(resource.RUSAGE_CHILDREN)
    return usage.ru_utime + usage.ru_stime


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("tree", help="the folder to ingest (e.g. /usr/share/doc)")
    parser.add_argument("--model", required=True, help="model folder (a tiny replica is enough)")
    parser.add_argument(
        "--checkout", action="append", required=True, metavar="NAME=PATH", help="a source tree of e5v_qdrant"
    )
    parser.add_argument("--timeout", type=float, default=3600, help="seconds per run")
    args = parser.parse_args()
    rows = []
    for spec in args.checkout:
        name, _, path = spec.partition("=")
        with tempfile.TemporaryDirectory(prefix=f"messy-{name}-") as store:
            first = run(path, args.tree, args.model, store, args.timeout)
            again = run(path, args.tree, args.model, store, args.timeout)
        rows.append((name, first, again))
        print(f"{name}: first {first} / re-run {again}", file=sys.stderr, flush=True)
    print(
        f"{'checkout':<10} {'run':<7} {'seconds':>8} {'CPU s':>8} {'exit':>7} {'stdout lines':>13} {'stderr lines':>13}"
    )
    for name, first, again in rows:
        for label, r in (("first", first), ("re-run", again)):
            print(
                f"{name:<10} {label:<7} {r['seconds']:>8.1f} {r['cpu_seconds']:>8.1f} {r['exit']!s:>7} {r['stdout_lines']:>13} "
                f"{r['stderr_lines']:>13}"
            )
    if len(rows) == 2:
        (a, fa, ra), (b, fb, rb) = rows
        print(
            f"re-run time {a}/{b}: {ra['seconds'] / rb['seconds']:.1f}x wall, {ra['cpu_seconds'] / rb['cpu_seconds']:.1f}x CPU"
        )


if __name__ == "__main__":
    main()
