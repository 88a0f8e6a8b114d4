"""What `python train.py -m ...` does when a job fails: the other jobs run, then a summary and the exit code.

Hydra's basic launcher runs the jobs one after another in this process. A job that fails (a bad value,
bad data, a full disk, a NaN) prints its one line, writes `outcome.json` into its folder, and the sweep
goes on with the next job. A stop signal (SIGTERM, Ctrl-C) stops the whole sweep instead: the job in
flight writes its checkpoint, the remaining jobs are recorded as not run. At the end rank 0 prints one
line per job, and the process exits with the largest exit code of its jobs (common/exit_codes.py).
To finish a stopped sweep, run the same command with `hydra.sweep.dir=<its folder>`: finished jobs are
skipped (harness/checkpoint/run_dir.py), stopped ones resume from their checkpoints, the rest run.

Under `hydra/launcher=slurm` (submitit) every job is its own SLURM job, so the others run whatever one
does; the submitting process prints the same summary from the jobs' outcome.json files once they are
all done. (A job that SLURM itself kills, by time limit or memory, makes submitit raise in the
submitting process before the summary; its array siblings keep running.)
"""
from __future__ import annotations

from pathlib import Path
from typing import Any

from hydra.experimental.callback import Callback
from omegaconf import OmegaConf

from common import exit_codes
from harness.process import outcome
from harness.process.launch import launcher_rank

_state: dict[str, Any] = {"sweep_dir": None, "stopped": None, "exit_code": exit_codes.OK}


def stop(reason: str) -> None:
    """The sweep is stopped (signal, second Ctrl-C): later jobs of this process are not run."""
    _state["stopped"] = _state["stopped"] or reason


def stopped() -> str | None:
    return _state["stopped"]


def exit_code() -> int:
    return _state["exit_code"]


def _jobs(sweep_dir: Path) -> list[tuple[int, Path, dict | None]]:
    if not sweep_dir.is_dir():
        return []
    found = [(int(p.name), p) for p in sweep_dir.iterdir() if p.is_dir() and p.name.isdigit()]
    return [(n, p, outcome.read(p)) for n, p in sorted(found)]


def _hydra_overrides(job_dir: Path) -> list[str]:
    """The overrides Hydra recorded for a job that left no outcome.json (killed)."""
    try:
        return [str(o) for o in OmegaConf.load(job_dir / ".hydra" / "overrides.yaml")]
    except Exception:  # noqa: BLE001 - no record: shown without overrides
        return []


def summary_lines(sweep_dir: Path) -> tuple[list[str], int]:
    """(lines, exit code): a headline and one line per job folder of the sweep."""
    jobs = _jobs(sweep_dir)
    if not jobs:
        return [], exit_codes.OK
    per_job = [set(o["overrides"] if o else _hydra_overrides(path)) for _, path, o in jobs]
    known = [o for o, (_, _, rec) in zip(per_job, jobs) if rec]
    common = set.intersection(*known) if len(known) > 1 else set()  # shown once: only what differs per job
    lines, counts, code = [], {}, exit_codes.OK
    for (n, path, o), overrides in zip(jobs, per_job):
        status = o["status"] if o else "no outcome"
        job_code = o["exit_code"] if o else exit_codes.CRASH
        code = max(code, job_code)
        counts[status] = counts.get(status, 0) + 1
        shown = ",".join(sorted(overrides - common)) or "(no overrides)"
        message = o["message"] if o else "no outcome.json: killed, or still running"
        said = message if message.startswith(status) else f"{status}: {message}"
        lines.append(f"  #{n} {shown}: {said}" + (f" (exit {job_code})" if job_code else ""))
    tally = ", ".join(f"{k} {v}" for k, v in counts.items())
    head = f"sweep {sweep_dir}: {len(jobs)} jobs: {tally}" + (f"; exit {code}" if code else "")
    unfinished = any(not o or o["status"] in ("stopped", "not_run", "interrupted") for _, _, o in jobs)
    if unfinished:
        lines.append(f"  to finish it: the same command with hydra.sweep.dir={sweep_dir} "
                     "(finished jobs are skipped, stopped ones resume)")
    return [head, *lines], code


def print_partial_summary() -> None:
    """After a sweep that ended early (a job's config did not compose): what the finished jobs did."""
    if _state["sweep_dir"] is not None and launcher_rank() == 0:
        lines, code = summary_lines(Path(_state["sweep_dir"]))
        _state["exit_code"] = max(_state["exit_code"], code)
        print("\n".join(lines), flush=True)


class SweepSummary(Callback):
    """Hydra callback (configs/config.yaml: hydra.callbacks): the summary at the end of a multirun."""

    def on_multirun_start(self, config, **kwargs) -> None:
        _state.update(sweep_dir=str(config.hydra.sweep.dir), stopped=None, exit_code=exit_codes.OK)

    def on_multirun_end(self, config, **kwargs) -> None:
        code = outcome.exit_code()  # this process's jobs (every rank, basic launcher)
        if launcher_rank() == 0:    # rank 0 (or the submitting process) reads every job's outcome.json
            lines, from_files = summary_lines(Path(str(config.hydra.sweep.dir)))
            code = max(code, from_files)
            if lines:
                print("\n".join(lines), flush=True)
        _state["exit_code"] = max(_state["exit_code"], code)
