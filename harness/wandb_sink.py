"""Weights & Biases sink for MetricsLogger (`logger=wandb`). Built on rank 0 only (harness/tracking.py).

Charts: `val/loss` against training wall-clock (`train_time_ms`, validation and compile excluded: the
speedrun's x-axis), the same values as `val_vs_tokens/loss` against tokens seen, and `train/*` (loss, step
time, tokens/s, window size), `lr/<role>` (and `lr/factor`) and `diag/*` (optim.diag_every) against the
optimizer step. The run's config holds the resolved Hydra config plus a `run` section (git commit
and dirty flag, hardware, world size); its summary holds the final/best val loss, the step, time and
tokens at which the target val loss was first reached, throughput and peak memory.

wandb is a convenience, never a reason to lose a run: if it cannot be imported, cannot start (no login,
no network: `logger.init_timeout` bounds the wait) or fails later, the sink prints ONE warning line to
stderr and turns itself off; metrics.jsonl is written regardless.
"""
from __future__ import annotations

import importlib
import sys
from pathlib import Path

from harness.config import WandbLoggerConfig
from harness.metrics import EVENT_FIELDS, tokens_per_s

TRAIN_NAMES = {"train_loss": "train/loss", "step_avg_ms": "train/step_avg_ms", "lr_factor": "lr/factor"}


class WandbSink:
    def __init__(self, cfg: WandbLoggerConfig, config: dict, run_dir: Path, group: str | None = None,
                 name: str | None = None, wandb_module=None):
        """Start the wandb run (files under `cfg.dir` or `run_dir`); `wandb_module` lets tests inject a fake."""
        self.run_dir, self.run, self.warned = run_dir, None, False
        try:
            wandb = wandb_module if wandb_module is not None else importlib.import_module("wandb")
            self.run = wandb.init(
                project=cfg.project, entity=cfg.entity, mode=cfg.mode.value, group=group, name=name,
                tags=list(cfg.tags), config=config, dir=str(cfg.dir or run_dir),
                settings=wandb.Settings(init_timeout=cfg.init_timeout))
            self._define_metrics()
        except Exception as e:  # ImportError, wandb.errors.UsageError (no login), CommError (network), ...
            self._give_up("could not start", e)

    def _define_metrics(self) -> None:
        run = self.run
        run.define_metric("train_time_ms")  # x-axes, logged in every row
        run.define_metric("tokens")
        run.define_metric("val/loss", step_metric="train_time_ms", summary="min")
        run.define_metric("val_vs_tokens/loss", step_metric="tokens", summary="min")

    def log(self, event: dict) -> None:
        if self.run is None or event["event"] not in ("val", "train", "diag"):
            return
        row = {"train_time_ms": event["train_time_ms"], "tokens": event["tokens"]}
        fields = {k: v for k, v in event.items() if k not in EVENT_FIELDS}
        if event["event"] == "val":
            row.update({"val/loss": event["val_loss"], "val_vs_tokens/loss": event["val_loss"]})
        elif event["event"] == "diag":  # the optimizer's flat name -> float diagnostics
            row.update({f"diag/{k}": v for k, v in fields.items()})
        else:  # lr/<role> keep their names; train_loss -> train/loss, window_tokens -> train/window_tokens
            row.update({TRAIN_NAMES.get(k, k if "/" in k else f"train/{k}"): v for k, v in fields.items()})
            row["train/tokens_per_s"] = tokens_per_s(event)
        try:
            self.run.log(row, step=event["step"])
        except Exception as e:
            self._give_up("stopped logging", e)

    def close(self, summary: dict) -> None:
        if self.run is None:
            return
        try:
            self.run.summary.update({k: v for k, v in summary.items() if v is not None})
            self.run.finish()
        except Exception as e:
            self._give_up("could not finish the run", e)
        self.run = None

    def _give_up(self, what: str, error: Exception) -> None:
        self.run = None
        if self.warned:
            return
        self.warned = True
        reason = " ".join(f"{type(error).__name__}: {error}".split())[:300]  # one line, bounded
        print(f"warning: wandb {what} ({reason}); training goes on without wandb and metrics still go to "
              f"{self.run_dir / 'metrics.jsonl'}. Fix: `wandb login` and network access, or logger.mode=offline "
              f"(upload later with `wandb sync`), or logger=none", file=sys.stderr, flush=True)
