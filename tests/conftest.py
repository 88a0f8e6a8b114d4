"""Shared test helpers: paths, and running train.py as a user would (a subprocess)."""
from __future__ import annotations

import os
import subprocess
import sys
from pathlib import Path

import pytest

REPO = Path(__file__).resolve().parents[1]
SHARED = REPO.parent / "shared"
FINEWEB_TOKENS = SHARED / "corpora" / "fineweb-sample" / "tokens"

needs_fineweb = pytest.mark.skipif(not FINEWEB_TOKENS.is_dir(), reason="../shared FineWeb sample not present")


def pytest_configure(config: pytest.Config) -> None:
    """Under pytest-xdist (pytest.ini runs one worker per core), each worker and every process it launches
    gets one torch thread: two workers of two threads each on two cores only spin against each other."""
    if int(os.environ.get("PYTEST_XDIST_WORKER_COUNT", "1")) > 1:
        import torch

        os.environ["OMP_NUM_THREADS"] = "1"  # inherited by train.py, torchrun and the scripts the tests launch
        torch.set_num_threads(1)


def run_train(*overrides: str, nproc: int = 1, timeout: int = 600, env: dict | None = None) -> subprocess.CompletedProcess:
    """Run train.py (under torchrun when nproc > 1) from the repo root; returns the finished process."""
    if nproc > 1:
        cmd = [sys.executable, "-m", "torch.distributed.run", "--standalone", f"--nproc_per_node={nproc}", "train.py"]
    else:
        cmd = [sys.executable, "train.py"]
    full_env = {**os.environ, "PYTHONUNBUFFERED": "1", "OMP_NUM_THREADS": "1" if nproc > 1 else os.environ.get("OMP_NUM_THREADS", "2"), **(env or {})}
    return subprocess.run(cmd + list(overrides), cwd=REPO, capture_output=True, text=True, timeout=timeout, env=full_env)


def run_script(module: str, *args: str, timeout: int = 120, env: dict | None = None) -> subprocess.CompletedProcess:
    """Run `python -m MODULE ARGS` (e.g. analysis.compare) from the repo root, as a user does; returns the finished process."""
    return subprocess.run([sys.executable, "-m", module, *args], cwd=REPO, capture_output=True, text=True,
                          timeout=timeout, env=env)


def error_lines(proc: subprocess.CompletedProcess) -> list[str]:
    return [line for line in proc.stderr.splitlines() if line.startswith("error")]


def pytest_collection_modifyitems(config: pytest.Config, items: list[pytest.Item]) -> None:
    """The folders are the split: tests/e2e/ holds only `e2e` tests and tests/unit/ none, so
    `-m "not e2e"` and `tests/unit` select the same unit tests (docs/layout.md)."""
    misplaced = []
    for item in items:
        folder = Path(str(item.fspath)).relative_to(REPO / "tests").parts[0]
        e2e = item.get_closest_marker("e2e") is not None
        if (folder == "e2e" and not e2e) or (folder == "unit" and e2e):
            misplaced.append(f"{item.nodeid} ({'marked' if e2e else 'not marked'} e2e)")
    if misplaced:
        raise pytest.UsageError("tests in the wrong folder for their e2e mark: " + "; ".join(misplaced[:5]))
