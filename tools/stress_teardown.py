"""Stress the end of a run: N finished 2-rank CPU runs while a background load keeps every core busy.

A finished run must exit 0 on every rank, every time. Teardown races (a thread still running while the
interpreter exits, a process group destroyed in the wrong order) show up only now and then, and more
often on a loaded machine, so this runs the same short 2-rank gloo job many times next to a matmul
load and counts the runs that did not end cleanly: a nonzero exit of torchrun, an abort message
(`terminate called ...`, a signal), or a run folder without its closing summary.

    python -m tools.stress_teardown --runs 20                 # 20 runs, load on every core
    python -m tools.stress_teardown --runs 5 --load-threads 0 # no background load

Not a test: it takes about 15-30 s per run on 2 loaded cores. Exit code 0 when every run was clean,
1 otherwise (the failing runs' output tails are printed and kept under --keep).
"""
from __future__ import annotations

import argparse
import multiprocessing as mp
import os
import subprocess
import sys
import tempfile
import time
from pathlib import Path

from analysis.runs import METRICS_FILE, read_events
from common.paths import REPO

RUN = ["experiment=smoke", "train.max_steps=5", "train.log_every=1", "train.val_every=0", "train.precision=fp32"]
ABORTS = ("terminate called", "Aborted", "core dumped", "Fatal Python error", "Segmentation fault", "SIGABRT",
          "Traceback")


def _load(threads: int, stop) -> None:
    """Keep `threads` cores busy with float32 matmuls until `stop` is set."""
    import torch

    torch.set_num_threads(threads)
    a = torch.randn(512, 512)
    while not stop.is_set():
        a = torch.tanh(a @ a)


def one_run(run_dir: Path, nproc: int, timeout: float) -> tuple[bool, str, float]:
    """(clean, output, seconds) of one finished torchrun job writing into run_dir."""
    cmd = [sys.executable, "-m", "torch.distributed.run", "--standalone", f"--nproc_per_node={nproc}", "train.py",
           *RUN, f"hydra.run.dir={run_dir}"]
    env = {**os.environ, "OMP_NUM_THREADS": "1", "PYTHONUNBUFFERED": "1"}
    t = time.perf_counter()
    try:
        proc = subprocess.run(cmd, cwd=REPO, capture_output=True, text=True, timeout=timeout, env=env)
    except subprocess.TimeoutExpired as e:
        return False, f"timed out after {timeout:.0f} s\n{e.stdout or ''}{e.stderr or ''}", time.perf_counter() - t
    out = proc.stdout + proc.stderr
    seconds = time.perf_counter() - t
    events = read_events(run_dir) if (run_dir / METRICS_FILE).exists() else []
    finished = bool(events) and events[-1].get("event") == "summary"
    clean = proc.returncode == 0 and finished and not any(a in out for a in ABORTS)
    return clean, f"exit {proc.returncode}, summary {'written' if finished else 'MISSING'}\n{out}", seconds


def main(argv: list[str] | None = None) -> int:
    p = argparse.ArgumentParser(prog="python -m tools.stress_teardown", description=__doc__.split("\n\n")[0])
    p.add_argument("--runs", type=int, default=20, help="finished runs to launch (default 20)")
    p.add_argument("--nproc", type=int, default=2, help="ranks per run (default 2)")
    p.add_argument("--load-threads", type=int, default=os.cpu_count() or 2,
                   help="matmul threads kept busy in the background (default: every core; 0 = none)")
    p.add_argument("--timeout", type=float, default=300, help="seconds before a run counts as hung (default 300)")
    p.add_argument("--keep", default=None, help="folder for the runs (default: a temporary one, removed if clean)")
    args = p.parse_args(argv)

    root = Path(args.keep or tempfile.mkdtemp(prefix="stress-teardown-"))
    stop = mp.Event()
    load = mp.Process(target=_load, args=(args.load_threads, stop), daemon=True) if args.load_threads else None
    if load is not None:
        load.start()
    failures = []
    try:
        for i in range(args.runs):
            clean, out, seconds = one_run(root / f"run{i:03d}", args.nproc, args.timeout)
            print(f"run {i + 1}/{args.runs}: {'ok' if clean else 'FAILED'} ({seconds:.1f} s)", flush=True)
            if not clean:
                failures.append(i)
                (root / f"run{i:03d}.out").write_text(out)
                print("\n".join(out.splitlines()[-15:]), flush=True)
    finally:
        stop.set()
        if load is not None:
            load.join(timeout=10)
    print(f"{len(failures)} failed of {args.runs} finished {args.nproc}-rank runs "
          f"(background load: {args.load_threads} threads; runs in {root})", flush=True)
    if not failures and args.keep is None:
        import shutil

        shutil.rmtree(root, ignore_errors=True)
    return 0 if not failures else 1


if __name__ == "__main__":
    sys.exit(main())
