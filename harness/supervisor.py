"""One job of train.py, supervised: every way a run can end becomes one Outcome (harness/process/outcome.py).

The training function computes; this module decides what its ending means for the user and the sweep:
finished, stopped (a checkpoint: the same command resumes), failed (a one-line user error, exit 2),
diverged, interrupted (a second Ctrl-C), crashed (a bug: the traceback). The exit code follows from the
recorded outcome (harness/process/cli.py, common/exit_codes.py). Each ending's line is printed once, by
rank 0 where every rank sees the same error.
"""
from __future__ import annotations

import contextlib
import sys
import traceback
from pathlib import Path
from typing import Callable

import torch
from hydra.core.hydra_config import HydraConfig
from hydra.types import RunMode
from omegaconf import DictConfig, OmegaConf

from common.atomic_io import write_text_atomic
from data.loader import DataError
from data.shards import ShardError
from harness.checkpoint.checkpointer import CheckpointError, SaveInterrupted
from harness.checkpoint.run_dir import RunDirError, RunLock, claim
from harness.checkpoint.store import describe_os_error, latest
from harness.config.schema import Config, ConfigError, load_config
from harness.loop.nonfinite import NonFiniteLoss
from harness.process import distributed as D
from harness.process import outcome, sweep
from harness.process.console_log import ConsoleLog
from harness.process.launch import launcher_rank
from harness.process.outcome import Outcome
from harness.process.preemption import Preempted, StopRequest

USER_ERRORS = (ConfigError, DataError, ShardError, CheckpointError, RunDirError)  # one line, exit 2
# train_fn(cfg, rank_info, run_dir, stop) -> the run's summary dict (train.py's train)
TrainFn = Callable[[Config, D.RankInfo, Path, StopRequest], dict]


def job_outcome(train_fn: TrainFn, hydra_cfg: DictConfig, run_dir: Path, overrides: list[str],
                sweep_dir: str | None) -> Outcome:
    """Run one job with `train_fn`; every way it can end becomes one Outcome, its line printed once."""
    cfg, rank_info, lock, where = None, None, RunLock(run_dir), ""
    again = (f"to continue, run the same command again (resume=auto finds this run) or add hydra.run.dir={run_dir}"
             if sweep_dir is None else f"the sweep stops; to finish it, run the same command with "
                                       f"hydra.sweep.dir={sweep_dir}")
    is_main = lambda: rank_info.is_main if rank_info is not None else launcher_rank() == 0  # noqa: E731

    def say(status: str, message: str, stream=sys.stdout, **fields) -> Outcome:
        if is_main():
            print(message, file=stream, flush=True)
        return Outcome(status, message, overrides=overrides, **fields)

    try:
        cfg = load_config(hydra_cfg)
        rank_info = D.init_distributed(cfg.device)
        where = f" (rank {rank_info.rank})" if rank_info.world_size > 1 else ""
        # Rank 0's Hydra output folder is the run folder for every rank (decided once, no races).
        run_dir = Path(D.broadcast_object(str(run_dir) if rank_info.is_main else None))
        error, finished = D.broadcast_object(claim(run_dir, hydra_cfg, lock) if rank_info.is_main else None)
        if error is not None:
            raise RunDirError(error)
        if finished is not None:
            return say("already_finished", finished)
        if rank_info.is_main:
            write_text_atomic(run_dir / "config.yaml", OmegaConf.to_yaml(hydra_cfg, resolve=True))
        with StopRequest(cfg.checkpoint.on_signal, cfg.checkpoint.stop_check_every, rank_info.device,
                         announce=rank_info.is_main) as stop:
            summary = train_fn(cfg, rank_info, run_dir, stop)
        return Outcome("finished", f"finished {summary['steps']} steps, final val loss {summary['final_val_loss']:.4f}",
                       step=summary["steps"], final_val_loss=summary["final_val_loss"], overrides=overrides)
    except Preempted as e:
        return say("stopped", f"{e}; {again}", step=e.step)
    except USER_ERRORS as e:
        if rank_info is None or rank_info.is_main or not getattr(e, "from_rank0", False):  # the same error once
            print(f"error{where}: {e}", file=sys.stderr, flush=True)
        return Outcome("failed", str(e), overrides=overrides)
    except NonFiniteLoss as e:  # the loss is all-reduced: every rank sees it
        if is_main():
            print(f"error: {e}", file=sys.stderr, flush=True)
        return Outcome("diverged", str(e), overrides=overrides)
    except KeyboardInterrupt as e:  # a second Ctrl-C: out at once, nothing half-written left
        newest = latest(Path(cfg.checkpoint.dir or run_dir / "checkpoints")) if cfg is not None else None
        detail = str(e) if isinstance(e, SaveInterrupted) else f"stopped at once; newest checkpoint: {newest or 'none'}"
        return say("interrupted", f"interrupted by a second Ctrl-C: {detail}; the same command resumes from the "
                                  "newest checkpoint", sys.stderr)
    except OSError as e:  # e.g. a full disk under metrics.jsonl: the environment, not the code
        print(f"error{where}: cannot write or read {e.filename or 'a file'}: {describe_os_error(e)}",
              file=sys.stderr, flush=True)
        return Outcome("failed", f"{e.filename}: {describe_os_error(e)}", overrides=overrides)
    except torch.distributed.DistError as e:  # another rank died or left: its own error above is the cause
        first = " ".join(str(e).split())[:200]
        print(f"error{where}: lost contact with the other ranks ({first}); the first error above is the cause",
              file=sys.stderr, flush=True)
        return Outcome("crashed", f"lost contact with the other ranks: {first}", overrides=overrides)
    except Exception as e:  # a bug: the traceback says where
        traceback.print_exc()
        return Outcome("crashed", f"{type(e).__name__}: {' '.join(str(e).split())[:300]}", overrides=overrides)
    finally:
        D.shutdown()
        lock.release()


def run_hydra_job(train_fn: TrainFn, hydra_cfg: DictConfig) -> None:
    """One run, or one job of a sweep (which then goes on with the next job: harness/process/sweep.py); called
    from train.py's Hydra main. Records the job's outcome in its run folder (rank 0)."""
    hydra_conf = HydraConfig.get()
    run_dir, overrides = Path(hydra_conf.runtime.output_dir), list(hydra_conf.overrides.task)
    sweep_dir = str(hydra_conf.sweep.dir) if hydra_conf.mode == RunMode.MULTIRUN else None
    own_folder = launcher_rank() == 0  # other ranks' Hydra folder is "." (harness/process/launch.py): never written
    if sweep.stopped():
        outcome.record(Outcome("not_run", f"not run: the sweep was stopped ({sweep.stopped()})", overrides=overrides),
                       run_dir if own_folder else None)
        return
    with ConsoleLog(run_dir / "train.log") if own_folder else contextlib.nullcontext():  # rank 0's console
        result = job_outcome(train_fn, hydra_cfg, run_dir, overrides, sweep_dir)
    keep = result.status == "already_finished"  # its outcome.json says how it finished: keep that
    outcome.record(result, run_dir if own_folder and not keep else None)
    if sweep_dir is not None and result.status in ("stopped", "interrupted"):
        sweep.stop(f"job {hydra_conf.job.num} {result.status}")
