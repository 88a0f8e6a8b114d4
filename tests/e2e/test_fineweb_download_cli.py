"""`python -m data.prep.fineweb download` as a process against the fake hub on 127.0.0.1 (HF_ENDPOINT)."""
from __future__ import annotations

import os
import subprocess
import sys

import pytest

from tests.conftest import REPO as ROOT
from tests.unit.data import test_fineweb_download as unit

hub = unit.hub  # the fake hub fixture of the unit tests


@pytest.mark.e2e
def test_cli_process_end_to_end(hub, tmp_path):
    out = tmp_path / "shards"
    env = {**os.environ, "PYTHONPATH": str(ROOT)}
    r = subprocess.run([sys.executable, "-m", "data.prep.fineweb", "download", "--train-shards", "1", "--out", str(out)],
                       capture_output=True, text=True, env=env, cwd=ROOT, timeout=60)
    assert r.returncode == 0, r.stderr
    assert (out / "fineweb_train_000001.bin").read_bytes() == hub.content["fineweb_train_000001.bin"]
    assert "downloading" in r.stderr  # the progress bar
