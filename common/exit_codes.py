"""Exit codes of every command of the harness: `train.py` (alone, under torchrun, in a sweep) and the
data tools (`python -m data.prep.tokenize`, `python -m data.prep.fineweb`). One convention, documented in README.md:

    0    done: the run finished, stopped on a signal after writing its checkpoint (the same command
         resumes it), or had already finished
    1    an unexpected failure, shown with a traceback: a bug (please report it), or a lost rank
    2    an error reported in one `error:` line that names the fix: a bad config key or value, a
         missing or corrupt shard or checkpoint, a full disk, an unreachable download (as argparse's 2)
    3    training diverged: a non-finite loss or weights (the line names the last good checkpoint)
    130  interrupted: a second Ctrl-C (128 + SIGINT, the shell's convention)

A sweep (`-m`) runs every job and then exits with the largest code of its jobs.
"""
from __future__ import annotations

import sys
from collections.abc import Callable

OK = 0
CRASH = 1
ERROR = 2
DIVERGED = 3
INTERRUPTED = 130


def run_command(body: Callable[[], int], errors: tuple[type[BaseException], ...], interrupted: str) -> int:
    """A data tool's main: `body()`'s code; one of `errors` is one `error:` line and ERROR; Ctrl-C prints
    `interrupted: <interrupted>` (what was left where) and INTERRUPTED. Anything else is a bug: its traceback."""
    try:
        return body()
    except errors as e:
        print(f"error: {e}", file=sys.stderr)
        return ERROR
    except KeyboardInterrupt:
        print(f"interrupted: {interrupted}", file=sys.stderr)
        return INTERRUPTED
