"""Old commands, launched as a user would: one line naming the new command, exit 2."""
import subprocess
import sys

import pytest

from tests.conftest import REPO


@pytest.mark.e2e
@pytest.mark.parametrize("old,new", [("scripts.summarize", "python -m analysis summarize"),
                                     ("data.tokenize", "python -m data.prep.tokenize")])
def test_an_old_command_fails_in_one_line_with_exit_2(old, new):
    proc = subprocess.run([sys.executable, "-m", old, "--help"], cwd=REPO, capture_output=True, text=True, timeout=60)
    assert proc.returncode == 2
    assert proc.stderr.strip().splitlines() == [f"{old} has moved: run `{new}` (README.md, 'Layout')"]
