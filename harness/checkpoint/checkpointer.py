"""Save and resume the whole training state, exactly: a resumed run logs what an uninterrupted one would.

What a checkpoint holds (on-disk format: harness/checkpoint/store.py; configs and RNG: checkpoint_state.py):
    model.pt      the model's state_dict (the raw module: no DDP / compile prefixes)
    optimizer.pt  the optimizer's state_dict: every param group / role, with its own counters. Written
                  by rank 0: every optimizer of ours keeps its state whole and identical on all ranks
                  (the hybrid optimizer shards only the Newton-Schulz work, not the state), so one
                  copy resumes any world size.
    trainer.pt    step (the LR schedule is a function of it), train_time_ms, counters (skipped steps),
                  per-rank RNG states (torch CPU/CUDA, numpy, python) and data-loader positions,
                  gathered to rank 0; the model+optim config (flat dict, its hash) and the run config;
                  and the metrics.jsonl lines written so far.
    <name>.pt     the trainer's further state objects, when on: tail_ema.pt (train.tail_ema's EMA,
                  harness/loop/tail_ema.py); identical on every rank, written by rank 0.

Everything is tensors, str, int, float, bool, None, lists and dicts, so it loads with
torch.load(weights_only=True). `resume=auto` takes the newest complete checkpoint of the run's
checkpoint folder (the same command finds the run folder again, harness/checkpoint/run_dir.py; so does a
torchrun elastic restart) or starts fresh; `resume=PATH` a given one; `resume=none` starts fresh. On resume
rank 0 rewrites metrics.jsonl to the checkpoint's lines (new file, then rename; the replaced file is
kept as metrics.jsonl.bakN), so the run's final metrics equal an uninterrupted run's; each resume is
recorded in resumes.jsonl (step, checkpoint, time, code version, hardware, command-line overrides).

Rank 0 decides and writes; every decision and error is broadcast, so all ranks raise the same one-line
CheckpointError together instead of some of them hanging in a collective.
"""
from __future__ import annotations

import json
import time
from pathlib import Path
from typing import Any, Callable, NamedTuple

import torch
import torch.distributed as dist
from hydra.core.hydra_config import HydraConfig

from analysis.runs import METRICS_FILE, parse_events
from common.atomic_io import write_text_atomic
from harness.checkpoint.state import (config_diff, config_hash, model_optim_config, model_optim_defaults, rng_state,
                                     run_config, set_rng_state)
from harness.checkpoint.store import (
    CheckpointError,
    PendingCheckpoint,
    describe_os_error,
    find_checkpoint,
    latest,
    list_checkpoints,
    load_file,
    prune,
    read_manifest,
    remove_stale,
    set_aside,
    step_name,
    verify,
)
from harness.config.schema import Config
from harness.loop.nonfinite import NonFiniteLoss
from harness.process import distributed as D
from harness.telemetry.run_info import run_info

RESUMES = "resumes.jsonl"  # one line per resume: step, checkpoint, time, code version and hardware


class Resumed(NamedTuple):
    step: int             # optimizer steps already done: the loop starts here
    train_time_ms: float
    counters: dict


def _all_gather(obj: Any) -> list:
    if not dist.is_initialized():
        return [obj]
    out = [None] * dist.get_world_size()
    dist.all_gather_object(out, obj)
    return out


class SaveInterrupted(KeyboardInterrupt):
    """A second Ctrl-C landed while a checkpoint was being written: it was discarded, nothing half-written
    is left, and every rank stops (train.py exits 130)."""


def on_main(fn: Callable[[], Any]) -> Any:
    """Run fn on rank 0 only; every rank returns its result, or raises the same CheckpointError (or
    SaveInterrupted) together, instead of the other ranks waiting forever for rank 0.

    Ranks other than 0 mark the error `from_rank0`, so train.py prints it once."""
    result, error, interrupted = None, None, None
    if not dist.is_initialized() or dist.get_rank() == 0:
        try:
            result = fn()
        except CheckpointError as e:
            error = str(e)
        except KeyboardInterrupt as e:
            interrupted = str(e)
    result, error, interrupted = D.broadcast_object((result, error, interrupted))
    main = not dist.is_initialized() or dist.get_rank() == 0
    if interrupted is not None:
        raise SaveInterrupted(interrupted)
    if error is not None:
        exc = CheckpointError(error)
        exc.from_rank0 = not main
        raise exc
    return result


# ---- the checkpointer ----------------------------------------------------------------------------

class Checkpointer:
    """Created at the start of train(): checks the checkpoint folder and resolves `resume=` (reading and
    validating only, so a refused resume changes no file). `restore` loads the state and only then
    rewrites metrics.jsonl (before the metrics logger opens it); `due`/`save` write checkpoints."""

    def __init__(self, cfg: Config, rank_info: D.RankInfo, run_dir: Path):
        self.cfg, self.rank_info, self.run_dir = cfg, rank_info, Path(run_dir)
        self.root = Path(cfg.checkpoint.dir).expanduser() if cfg.checkpoint.dir else self.run_dir / "checkpoints"
        self.config = model_optim_config(cfg)
        self.last_saved: int | None = None
        self.resume_path: Path | None = None
        self.history: list[dict] = []  # rank 0, after restore: the metrics events up to the resumed step
        path = on_main(self._prepare)
        self.resume_path = Path(path) if path is not None else None

    # -- resume ------------------------------------------------------------------------------------

    def _prepare(self) -> str | None:
        """Rank 0: check the checkpoint folder, pick and validate the checkpoint to resume (no writes)."""
        try:  # fail now, not at the first checkpoint; the folder itself is made by the first save
            existing = self.root
            while not existing.exists():
                existing = existing.parent
            probe = existing / f".tmp-probe-{time.time_ns()}"
            probe.mkdir()
            probe.rmdir()
        except OSError as e:
            raise CheckpointError(f"checkpoint.dir {self.root} is not writable: {describe_os_error(e)}; "
                                  "set checkpoint.dir (or hydra.run.dir) to a writable folder") from None
        resume, force = self.cfg.resume, self.cfg.resume_force
        if resume == "none":
            existing = latest(self.root)
            if existing is not None and not force:
                raise CheckpointError(f"resume=none but {self.root} already holds checkpoints (newest "
                                      f"{existing.name}): use resume=auto to continue that run, a new "
                                      "hydra.run.dir, or resume_force=true to set them aside and start over")
            return None
        path = latest(self.root) if resume == "auto" else find_checkpoint(Path(resume).expanduser())
        if path is None:
            return None
        manifest = read_manifest(path)
        verify(path, manifest)
        trainer = load_file(path / "trainer.pt", "trainer state")
        try:
            saved, run_saved = json.loads(trainer["config"]), json.loads(trainer["run_config"])
            int(trainer["step"]), float(trainer["train_time_ms"]), int(trainer["world_size"])
        except (TypeError, KeyError, ValueError):
            raise CheckpointError(f"checkpoint {path}: trainer.pt does not hold a trainer state (step, configs); "
                                  "it is not a checkpoint of this trainer") from None
        diff = config_diff(saved, self.config, model_optim_defaults(self.cfg))
        if diff:
            listed = "; ".join(diff[:6]) + (f"; and {len(diff) - 6} more" if len(diff) > 6 else "")
            if not force:
                raise CheckpointError(f"checkpoint {path} was written with another model/optim config: {listed}. "
                                      "Resume with the checkpoint's values, or set resume_force=true to load it anyway")
            print(f"warning: resume_force=true: loading {path} despite model/optim config changes: {listed}",
                  flush=True)
        self._warn_run_changes(run_saved, int(trainer["world_size"]))
        return str(path)

    def _commit_resume(self, step: int, metrics: str) -> None:
        """Rank 0, once the state is loaded: retire checkpoints of an abandoned future, rewind metrics."""
        try:
            if self.resume_path is None and self.cfg.resume == "none" and list_checkpoints(self.root):
                moved = set_aside([p for _, p in list_checkpoints(self.root)])  # resume_force=true (checked)
                print(f"resume=none, resume_force=true: set {len(moved)} old checkpoints aside as "
                      f"{self.root}/abandoned-*", flush=True)
            newer = [p for s, p in list_checkpoints(self.root) if s > step]
            if self.resume_path is not None and newer:  # never let resume=auto pick them up later
                moved = set_aside(newer)
                print(f"resuming from step {step}: set {len(moved)} newer checkpoints aside as "
                      f"{', '.join(p.name for p in moved)}", flush=True)
        except OSError as e:
            raise CheckpointError(f"cannot rename old checkpoints in {self.root}: {describe_os_error(e)}") from None
        self._rewrite_metrics(metrics)

    def _record_resume(self, step: int) -> None:
        """Append who resumed what, when, with which code, to resumes.jsonl (metrics.jsonl stays as an
        uninterrupted run's)."""
        overrides = list(HydraConfig.get().overrides.task) if HydraConfig.initialized() else []
        record = {"event": "resume", "step": step, "checkpoint": str(self.resume_path),
                  "time": time.strftime("%Y-%m-%dT%H:%M:%S%z"),
                  **run_info(self.rank_info.device, self.rank_info.world_size, overrides)}  # the command line that resumed
        try:
            with open(self.run_dir / RESUMES, "a", encoding="utf-8") as f:
                f.write(json.dumps(record) + "\n")
        except OSError as e:
            print(f"warning: could not append to {self.run_dir / RESUMES}: {describe_os_error(e)}", flush=True)

    def _warn_run_changes(self, saved: dict, world: int) -> None:
        changed = config_diff(saved, run_config(self.cfg))
        if changed:
            print(f"warning: resuming with changed run settings (allowed; the result will differ from the "
                  f"original run): {'; '.join(changed)}", flush=True)
        if world != self.rank_info.world_size:
            print(f"warning: the checkpoint was written by {world} ranks, this run has {self.rank_info.world_size}: "
                  "per-rank RNG states are re-dealt, results are not bit-identical to the original run", flush=True)

    def _rewrite_metrics(self, text: str) -> None:
        """Make metrics.jsonl hold exactly `text` (the checkpoint's lines), keeping a replaced file."""
        path = self.run_dir / METRICS_FILE
        try:
            old = path.read_text(encoding="utf-8") if path.exists() else ""
            if old == text:
                return
            if old:
                n = 1
                while (backup := path.with_name(f"{METRICS_FILE}.bak{n}")).exists():
                    n += 1
                backup.write_text(old, encoding="utf-8")
                print(f"{METRICS_FILE}: events after the resume point moved out; the previous file is kept as "
                      f"{backup.name}", flush=True)
            write_text_atomic(path, text)
        except OSError as e:
            raise CheckpointError(f"cannot rewrite {path} for the resume: {describe_os_error(e)}; the previous "
                                  "file is intact") from None

    def restore(self, model: torch.nn.Module, optimizer: torch.optim.Optimizer, loader,
                extras: dict[str, Any] | None = None) -> Resumed:
        """Load the chosen checkpoint into model, optimizer, loader, the RNGs and `extras` (name -> object with
        load_state_dict, from <name>.pt) (every rank); then rank 0 makes metrics.jsonl hold exactly the
        checkpoint's events (empty when starting fresh). Call before opening the metrics logger."""
        if self.resume_path is None:
            on_main(lambda: self._commit_resume(0, ""))
            return Resumed(0, 0.0, {})
        path, rank, world = self.resume_path, self.rank_info.rank, self.rank_info.world_size
        blind = [r for r, seen in enumerate(_all_gather((path / "trainer.pt").is_file())) if not seen]
        if blind:  # every rank reads the checkpoint itself: on several nodes it must be on shared storage
            raise CheckpointError(f"ranks {blind} cannot see checkpoint {path}: put checkpoint.dir (or hydra.run.dir) "
                                  "on a filesystem every node shares")
        trainer = load_file(path / "trainer.pt", "trainer state")
        try:
            model.load_state_dict(load_file(path / "model.pt", "model state"))
        except RuntimeError as e:
            raise CheckpointError(f"checkpoint {path}: the model state does not fit this model: "
                                  f"{' '.join(str(e).split())[:300]}") from None
        # Hyperparameters come from this run's config (and device, e.g. fused=); state and counters from
        # the checkpoint. "step" is the hybrid optimizer's per-group step counter.
        fresh_groups = [{k: v for k, v in g.items() if k not in ("params", "step")} for g in optimizer.param_groups]
        try:
            optimizer.load_state_dict(load_file(path / "optimizer.pt", "optimizer state"))
        except (ValueError, KeyError, RuntimeError) as e:
            raise CheckpointError(f"checkpoint {path}: the optimizer state does not fit this optimizer: "
                                  f"{' '.join(str(e).split())[:300]}") from None
        for group, fresh in zip(optimizer.param_groups, fresh_groups):
            group.update(fresh)
        for name, obj in (extras or {}).items():
            if not (path / f"{name}.pt").is_file():
                raise CheckpointError(f"checkpoint {path} has no {name}.pt: it was written with train.{name} off; "
                                      f"resume with train.{name}=false, or start a new run folder")
            try:
                obj.load_state_dict(load_file(path / f"{name}.pt", f"{name} state"))
            except (ValueError, KeyError, RuntimeError) as e:
                raise CheckpointError(f"checkpoint {path}: the {name} state does not fit this run: "
                                      f"{' '.join(str(e).split())[:300]}") from None
        ranks = trainer["ranks"]
        mine = ranks[rank] if len(ranks) == world else ranks[rank % len(ranks)]
        set_rng_state(mine["rng"], self.rank_info.device)
        loader.load_state_dict(mine["loader"])
        on_main(lambda: self._commit_resume(int(trainer["step"]), trainer["metrics"]))
        self.last_saved = int(trainer["step"])
        if self.rank_info.is_main:
            self.history = parse_events(trainer["metrics"])  # the events logged up to the checkpoint
            self._record_resume(int(trainer["step"]))
        if self.rank_info.is_main:
            print(f"resumed from {path} at step {trainer['step']} (train_time {trainer['train_time_ms']:.0f} ms)",
                  flush=True)
        return Resumed(int(trainer["step"]), float(trainer["train_time_ms"]), dict(trainer.get("counters", {})))

    # -- save ----------------------------------------------------------------------------------------

    def due(self, step: int, last: bool) -> bool:
        """A periodic checkpoint (every N steps) or the final one is due before running `step`."""
        c = self.cfg.checkpoint
        if step == self.last_saved:
            return False
        return (c.every > 0 and step > 0 and step % c.every == 0) or (last and c.final)

    def save(self, step: int, train_time_ms: float, model: torch.nn.Module, optimizer: torch.optim.Optimizer,
             loader, counters: dict, extras: dict[str, Any] | None = None) -> Path:
        """Write the checkpoint of `step` optimizer steps done (collective: every rank calls it); `extras`:
        name -> object with state_dict, written as <name>.pt."""
        if step == self.last_saved and (found := latest(self.root)) is not None and found.name == step_name(step):
            return found  # nothing changed since it was written (e.g. a stop signal right after a resume)
        # A checkpoint is a point to go back to: never write a diverged model.
        norms = torch.stack([p.detach().float().norm() for p in model.parameters()])
        if not bool(torch.isfinite(norms).all()):  # one device sync
            raise NonFiniteLoss(f"the model has non-finite weights at step {step}; checkpoint not written; "
                                f"{self.last_good(step)}")
        per_rank = _all_gather({"rng": rng_state(self.rank_info.device), "loader": loader.state_dict()})

        def write() -> str:
            try:
                remove_stale(self.root)
                pending = PendingCheckpoint(self.root, step)
            except OSError as e:
                raise self._write_error(step, e) from None
            try:
                pending.add("model.pt", model.state_dict())
                pending.add("optimizer.pt", optimizer.state_dict())
                for name, obj in (extras or {}).items():
                    pending.add(f"{name}.pt", obj.state_dict())
                pending.add("trainer.pt", self._trainer_state(step, train_time_ms, counters, per_rank))
                path = pending.commit({"config_hash": config_hash(self.config), "world_size": self.rank_info.world_size,
                                       "created": time.strftime("%Y-%m-%dT%H:%M:%S%z")})
            except OSError as e:  # ENOSPC and co., also when torch.save saw them first (checkpoint_store.save_file)
                pending.abort()
                raise self._write_error(step, e) from None
            except KeyboardInterrupt:  # a second Ctrl-C during the write: discard it, keep the previous ones
                pending.abort()
                previous = latest(self.root)
                raise SaveInterrupted(f"checkpoint {step_name(step)} was being written and is discarded; "
                                      f"newest checkpoint: {previous or 'none'}") from None
            except BaseException:
                pending.abort()
                raise
            try:
                prune(self.root, self.cfg.checkpoint.keep)
            except OSError as e:
                print(f"warning: could not delete old checkpoints in {self.root}: {describe_os_error(e)}", flush=True)
            return str(path)

        path = Path(on_main(write))
        self.last_saved = step
        return path

    def _trainer_state(self, step: int, train_time_ms: float, counters: dict, per_rank: list) -> dict:
        metrics = self.run_dir / METRICS_FILE
        return {"step": step, "train_time_ms": float(train_time_ms), "counters": dict(counters),
                "config": json.dumps(self.config, sort_keys=True), "config_hash": config_hash(self.config),
                "run_config": json.dumps(run_config(self.cfg), sort_keys=True),
                "world_size": self.rank_info.world_size, "ranks": per_rank,
                "metrics": metrics.read_text(encoding="utf-8") if metrics.exists() else "",
                "torch_version": str(torch.__version__)}

    def _write_error(self, step: int, e: OSError) -> CheckpointError:
        previous = latest(self.root)
        kept = (f"the previous checkpoint {previous} is intact; free disk space (or set checkpoint.dir to a roomier "
                "folder), then run the same command again: it resumes from there" if previous else
                "no earlier checkpoint exists; free disk space (or set checkpoint.dir to a roomier folder), then run "
                "the same command again")
        return CheckpointError(f"cannot write checkpoint {step_name(step)} in {self.root}: {describe_os_error(e)}; "
                               f"{kept}")

    def last_good(self, step: int) -> str:
        """Phrase for error messages: the newest checkpoint written before `step`."""
        found = [p for s, p in list_checkpoints(self.root) if s < step]
        if found:
            return f"last good checkpoint: {found[-1]} (resume=that path to go back to it)"
        return "no checkpoint was written before it (set checkpoint.every to keep some)"
