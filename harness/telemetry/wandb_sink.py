"""Weights & Biases sink for MetricsLogger (`logger=wandb`). Built on rank 0 only (harness/telemetry/tracking.py).

Charts: `val/loss` against training wall-clock (`train_time_ms`, validation and compile excluded: the
speedrun's x-axis), the same values as `val_vs_tokens/loss` against tokens seen, and `train/*` (loss, step
time, tokens/s, window size), `lr/<role>` (and `lr/factor`) and `diag/*` (optim.diag_every) against the
optimizer step. The run's config holds the resolved Hydra config plus a `run` section (git commit
and dirty flag, hardware, world size); its summary holds the final/best val loss, the step, time and
tokens at which the target val loss was first reached, throughput and peak memory.

wandb is a convenience, never a reason to lose a run: if it cannot be imported, cannot start (no login,
no network) or fails later, the sink prints ONE warning line to stderr and turns itself off;
metrics.jsonl is written regardless. An unreachable server is found by one TCP connect (at most
PROBE_TIMEOUT_S) before wandb.init, which would otherwise retry for longer than its timeout; a slow
but reachable server gets `logger.init_timeout` seconds. The wait is before step 0: never train time.
"""
from __future__ import annotations

import importlib
import os
import socket
import sys
import threading
from pathlib import Path
from urllib.parse import urlsplit

from harness.config.schema import WandbLoggerConfig, WandbMode
from harness.telemetry.metrics import EVENT_FIELDS, tokens_per_s

TRAIN_NAMES = {"train_loss": "train/loss", "step_avg_ms": "train/step_avg_ms", "lr_factor": "lr/factor"}


class WandbSink:
    def __init__(self, cfg: WandbLoggerConfig, config: dict, run_dir: Path, group: str | None = None,
                 name: str | None = None, wandb_module=None):
        """Start the wandb run (files under `cfg.dir` or `run_dir`); `wandb_module` lets tests inject a fake."""
        self.run_dir, self.run, self.warned, self.timeout = run_dir, None, False, cfg.init_timeout
        try:
            wandb = wandb_module if wandb_module is not None else importlib.import_module("wandb")
            if cfg.mode is WandbMode.online and wandb_module is None:
                url, problem = server_unreachable(wandb, min(cfg.init_timeout, PROBE_TIMEOUT_S))
                if problem:
                    self._give_up("could not start", ConnectionError(f"server {url} unreachable: {problem}"))
                    return
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
        run.define_metric("val/ema_loss", step_metric="train_time_ms", summary="min")  # train.tail_ema
        run.define_metric("val_vs_tokens/ema_loss", step_metric="tokens", summary="min")

    def log(self, event: dict) -> None:
        if self.run is None or event["event"] not in ("val", "train", "diag"):
            return
        row = {"train_time_ms": event["train_time_ms"], "tokens": event["tokens"]}
        fields = {k: v for k, v in event.items() if k not in EVENT_FIELDS}
        if event["event"] == "val":
            row.update({"val/loss": event["val_loss"], "val_vs_tokens/loss": event["val_loss"]})
            if "val_ema_loss" in event:  # the tail-EMA readout (train.tail_ema)
                row.update({"val/ema_loss": event["val_ema_loss"], "val_vs_tokens/ema_loss": event["val_ema_loss"]})
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
        text = str(error).split(" Consider increasing the init_timeout")[0]  # wandb's advice names its own API
        reason = " ".join(f"{type(error).__name__}: {text}".split())[:300]  # one line, bounded
        timed_out = "timed out" in reason.lower() or "timeout" in reason.lower()
        wait = f"; it waited logger.init_timeout={self.timeout:g} s (raise it for a slow server)" if timed_out else ""
        print(f"warning: wandb {what} ({reason}){wait}; training goes on without wandb and metrics still go to "
              f"{self.run_dir / 'metrics.jsonl'}. Fix: `wandb login` and network access (logger.init_timeout="
              f"{self.timeout:g} s bounds the wait), or logger.mode=offline (upload later with `wandb sync`), or "
              "logger=none", file=sys.stderr, flush=True)


PROBE_TIMEOUT_S = 5.0  # a reachable server accepts a TCP connection well within this
_PROXY_VARS = ("HTTPS_PROXY", "https_proxy", "HTTP_PROXY", "http_proxy", "ALL_PROXY", "all_proxy")


def server_unreachable(wandb, timeout_s: float) -> tuple[str, str | None]:
    """(wandb's server URL, why it cannot be reached or None), from one TCP connect bounded by timeout_s.

    Without network wandb.init retries until its init_timeout and more (~100 s at wandb's default);
    a refused or unroutable connection is known at once. Behind a proxy the server is not probed.
    """
    try:  # the URL as wandb resolves it: its settings files, then WANDB_BASE_URL
        settings = wandb.Settings()
        settings.update_from_system_settings()
        settings.update_from_env_vars(dict(os.environ))
        url = str(settings.base_url)
    except Exception:  # noqa: BLE001 - another wandb version: let wandb.init decide
        return "", None
    if any(os.environ.get(v) for v in _PROXY_VARS):
        return url, None
    parts = urlsplit(url)
    host, port = parts.hostname, parts.port or (443 if parts.scheme == "https" else 80)
    if not host:
        return url, None
    result: list[str | None] = []

    def connect() -> None:
        try:
            socket.create_connection((host, port), timeout=timeout_s).close()
            result.append(None)
        except OSError as e:
            result.append(f"{type(e).__name__}: {e.strerror or e}")

    probe = threading.Thread(target=connect, name="wandb-probe", daemon=True)  # DNS has no timeout of its own
    probe.start()
    probe.join(timeout_s)
    return url, (result[0] if result else f"no answer within {timeout_s:g} s")
