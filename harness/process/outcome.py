"""How a run ended, in one line on the console, in `<run folder>/outcome.json`, and as the exit code.

Every exit path of train.py's main() ends in exactly one Outcome: it is printed once (rank 0, or the
failing rank), written by rank 0 to outcome.json (atomically; the folder of a run that failed at start
then says why, beside train.log), and recorded in this process, so that the process's exit code
(harness/process/cli.py) and a sweep's summary (harness/process/sweep.py) come from the same record.

    {"status": "failed", "exit_code": 2, "message": "train.global_batch_tokens=4096 is not divisible ...",
     "step": null, "final_val_loss": null, "overrides": ["experiment=smoke", "train.micro_batch_seqs=24"],
     "time": "2026-01-01T12:00:00+0000"}

status is one of STATUSES; a run folder whose outcome.json is missing was killed (or is running): each attempt
removes the previous attempt's file when it starts (`clear`).
"""
from __future__ import annotations

import json
import time
from dataclasses import asdict, dataclass, field
from pathlib import Path

from common import exit_codes
from common.atomic_io import write_text_atomic

OUTCOME = "outcome.json"
STATUSES = {
    "finished": exit_codes.OK,          # trained to the end (or to train.stop_at_val_loss)
    "already_finished": exit_codes.OK,  # resume=auto found this run finished with the same config
    "stopped": exit_codes.OK,           # SIGTERM/SIGINT: stopped after a step with a checkpoint
    "not_run": exit_codes.OK,           # a sweep job skipped because the sweep was stopped
    "failed": exit_codes.ERROR,         # an error reported in one line (config, data, checkpoint, disk)
    "diverged": exit_codes.DIVERGED,    # a non-finite loss or weights
    "interrupted": exit_codes.INTERRUPTED,  # a second Ctrl-C
    "crashed": exit_codes.CRASH,        # an unexpected exception (traceback above it)
}


@dataclass
class Outcome:
    status: str
    message: str
    step: int | None = None
    final_val_loss: float | None = None
    overrides: list[str] = field(default_factory=list)
    exit_code: int = -1

    def __post_init__(self) -> None:
        if self.status not in STATUSES:
            raise ValueError(f"unknown outcome status {self.status!r}")
        if self.exit_code < 0:
            self.exit_code = STATUSES[self.status]


_RECORDED: list[Outcome] = []  # the jobs this process ran (a sweep runs several in one process)


def record(result: Outcome, run_dir: Path | None) -> None:
    """Remember `result` for the exit code; write it to run_dir/outcome.json when run_dir is given (rank 0)."""
    _RECORDED.append(result)
    if run_dir is None:
        return
    data = {**asdict(result), "time": time.strftime("%Y-%m-%dT%H:%M:%S%z")}
    try:
        write_text_atomic(Path(run_dir) / OUTCOME, json.dumps(data, indent=1) + "\n")
    except OSError as e:  # a full disk must not hide the run's own message, printed already
        print(f"warning: could not write {Path(run_dir) / OUTCOME}: {e.strerror or e}", flush=True)


def clear(run_dir: Path) -> None:
    """A new attempt starts in run_dir (rank 0, once the folder is claimed): the previous attempt's outcome.json
    goes, so that an attempt killed with kill -9 leaves a folder without one (killed) instead of one claiming
    the previous attempt's outcome."""
    try:
        (Path(run_dir) / OUTCOME).unlink(missing_ok=True)
    except OSError as e:
        print(f"warning: could not remove the previous {Path(run_dir) / OUTCOME}: {e.strerror or e}", flush=True)


def read(run_dir: Path) -> dict | None:
    """The outcome.json of a run folder, or None (killed, still running, or not a run folder)."""
    try:
        data = json.loads((Path(run_dir) / OUTCOME).read_text(encoding="utf-8"))
    except (OSError, ValueError):
        return None
    return data if isinstance(data, dict) and data.get("status") in STATUSES else None


def recorded() -> list[Outcome]:
    return list(_RECORDED)


def exit_code() -> int:
    """The largest exit code of the jobs this process ran (0 when it ran none, e.g. --help)."""
    return max((r.exit_code for r in _RECORDED), default=exit_codes.OK)
