"""SIGTERM to the launcher of a 2-rank run: the ranks checkpoint and exit 0, rank 0 alone says so, and
`python -m harness.process.torchrun` exits 0 without torchrun's SignalException traceback."""
from __future__ import annotations

import signal


from harness.process.torchrun import stopped_line


def test_the_exit_code_says_whether_every_rank_stopped_cleanly():
    assert stopped_line(signal.SIGTERM, {0: 0, 1: 0})[0] == 0
    code, line = stopped_line(signal.SIGTERM, {0: 0, 1: -9})
    assert code == 1 and "rank 1: -9" in line
    assert stopped_line(signal.SIGINT, {})[0] == 1  # no rank ever ran
