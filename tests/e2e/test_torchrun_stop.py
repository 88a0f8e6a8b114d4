"""SIGTERM to the launcher: every rank stops cleanly and the launcher exits 0."""
from __future__ import annotations

import json
import os
import signal
import subprocess
import sys
import time

import pytest

from tests.conftest import REPO


@pytest.mark.e2e
def test_sigterm_to_the_launcher_stops_every_rank_with_exit_0(tmp_path):
    run_dir = tmp_path / "run"
    env = {**os.environ, "PYTHONUNBUFFERED": "1", "OMP_NUM_THREADS": "1", "SPEEDRUN_FAULT": "sleep:ms=200"}
    out, err = tmp_path / "out", tmp_path / "err"
    with open(out, "w") as o, open(err, "w") as e:
        proc = subprocess.Popen([sys.executable, "-m", "harness.process.torchrun", "--standalone", "--nproc_per_node=2",
                                 "train.py", "experiment=smoke", "train.max_steps=60", "train.log_every=1",
                                 "train.val_tokens=8192", f"hydra.run.dir={run_dir}"],
                                cwd=REPO, env=env, stdout=o, stderr=e)
        deadline = time.monotonic() + 300
        while "step:3/" not in out.read_text() and proc.poll() is None and time.monotonic() < deadline:
            time.sleep(0.5)
        proc.send_signal(signal.SIGTERM)
        assert proc.wait(timeout=120) == 0, err.read_text()[-3000:]
    stdout, stderr = out.read_text(), err.read_text()
    assert "Traceback" not in stderr and "SignalException" not in stderr
    assert stdout.count("SIGTERM received") == 1  # rank 0 alone prints the notice
    assert "torchrun: SIGTERM received: every rank stopped after writing its checkpoint (exit 0)" in stderr
    result = json.loads((run_dir / "outcome.json").read_text())
    assert result["status"] == "stopped" and (run_dir / "checkpoints" / f"step_{result['step']:06d}").is_dir()
