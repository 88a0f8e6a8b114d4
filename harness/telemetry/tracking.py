"""A run's metrics logger: which sinks it feeds, and the names that tie runs together.

Rank 0 gets the console (speedrun lines, plus a status line on a terminal), `metrics.jsonl`, and the
`logger` group's sink (`logger=wandb`); other ranks get a logger with no sinks, so they never touch
files or wandb. The first metrics.jsonl event ("run") records the code version and hardware.
"""
from __future__ import annotations

from pathlib import Path

from hydra.core.hydra_config import HydraConfig
from hydra.types import RunMode
from omegaconf import OmegaConf

from harness.config.schema import Config, WandbMode
from harness.process.distributed import RankInfo
from harness.telemetry.metrics import ConsoleSink, JsonlSink, MetricsLogger
from harness.telemetry.run_info import run_info

# Overrides that say how a run is tracked or which experiment file it extends, not what it trains:
# left out of the default wandb run name.
NAME_SKIP = ("logger", "experiment", "hydra", "device")


def run_identity(cfg: Config) -> tuple[str | None, str | None, list[str]]:
    """(group, run name, overrides). Group: the experiment, or `<experiment>-<sweep folder>` under -m,
    so a sweep's jobs (and seeds) sit together; name: the job's distinguishing overrides."""
    if not HydraConfig.initialized():
        return cfg.experiment, None, []
    hydra = HydraConfig.get()
    overrides = list(hydra.overrides.task)
    group = cfg.experiment
    if hydra.mode == RunMode.MULTIRUN:
        group = f"{cfg.experiment or 'sweep'}-{Path(hydra.sweep.dir).name}"
    kept = [o for o in overrides if o.lstrip("+~").split("=")[0].split(".")[0].split("/")[0] not in NAME_SKIP]
    return group, ",".join(kept) or None, overrides


def make_logger(cfg: Config, rank_info: RankInfo, run_dir: Path, history: list[dict] | None = None,
                setup: dict | None = None) -> MetricsLogger:
    """history: the metrics.jsonl events of a resumed run up to its checkpoint (already in the file):
    they feed the best/target tracking, and the file keeps its first "run" event (so it stays
    identical to an uninterrupted run's; harness/checkpoint/checkpointer.py records resumes in resumes.jsonl).
    setup: what the trainer chose at start (CPU threads, attention path, compile), added to the "run" event."""
    if not rank_info.is_main:
        return MetricsLogger([])
    group, name, overrides = run_identity(cfg)
    info = {**run_info(rank_info.device, rank_info.world_size, overrides), **(setup or {})}
    sinks = [ConsoleSink(cfg.train.max_steps), JsonlSink(run_dir / "metrics.jsonl")]
    if cfg.logger.name == "wandb" and cfg.logger.mode is not WandbMode.disabled:
        from harness.telemetry.wandb_sink import WandbSink  # wandb is imported only when asked for

        config = OmegaConf.to_container(OmegaConf.structured(cfg), resolve=True, enum_to_str=True)
        sinks.append(WandbSink(cfg.logger, {**config, "run": info}, run_dir,
                               group=cfg.logger.group or group, name=cfg.logger.run_name or name))
    # With the tail-EMA readout on, the run is scored on it (as track-3 result #46 is): best and target figures.
    log = MetricsLogger(sinks, target_val_loss=cfg.train.target_val_loss,
                        metric="val_ema_loss" if cfg.train.tail_ema else "val_loss")
    for event in history or []:
        log.tracker.update(event)
    if not history:
        log.log({"event": "run", **info})
    return log
