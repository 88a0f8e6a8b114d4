"""Metrics events: one dict per event, fanned out to the console, metrics.jsonl and any extra sinks.

Only rank 0 builds a logger with sinks; other ranks get a disabled one, so call
sites never branch on rank. Events:

    {"event": "run",   "git_commit", "git_dirty", "hardware", "world_size", ...}   (first, see run_info.py)
    {"event": "val",   "step", "tokens", "train_time_ms", "val_loss", "val_ema_loss" (train.tail_ema)}
    {"event": "train", "step", "tokens", "train_time_ms", "step_avg_ms", "train_loss",
               "lr/<role>" (each param group's lr now), "lr_factor" (the schedule's factor, when every
               group has the same), "window_tokens", "window_short_tokens" (sliding-window models)}
    {"event": "diag",  "step", "tokens", "train_time_ms", <the optimizer's diagnostics(): flat name -> float>}
    {"event": "summary", "final_val_loss", "best_val_loss", "target_val_loss_step", ...}   (last)

`step` counts optimizer steps done, `tokens` = step * global batch tokens, and
`train_time_ms` is training wall-clock only (validation, checkpoints, diagnostics and compile excluded).
"""
from __future__ import annotations

import json
import math
import sys
import time
from pathlib import Path
from typing import Protocol

from analysis.crossing import ValTracker  # the target rule, shared with analysis/summarize.py
from harness.telemetry.run_info import peak_host_memory_mib


class Sink(Protocol):
    def log(self, event: dict) -> None: ...
    def close(self, summary: dict) -> None: ...


EVENT_FIELDS = ("event", "step", "tokens", "train_time_ms")  # every val/train/diag event has these


def learning_rates(param_groups: list[dict]) -> dict[str, float]:
    """Train-event fields for the optimizer's rates: `lr/<role>` per param group (the group's "role",
    else its index; repeated roles get `#k`), and `lr_factor` = lr / initial_lr when every group
    with an initial_lr > 0 has the same factor (one schedule for all)."""
    out: dict[str, float] = {}
    factors = set()
    for i, group in enumerate(param_groups):
        name = f"lr/{group.get('role', i)}"
        k = 1
        while name in out:
            k += 1
            name = f"lr/{group.get('role', i)}#{k}"
        out[name] = float(group["lr"])
        if group.get("initial_lr"):
            factors.add(round(group["lr"] / group["initial_lr"], 12))
    if len(factors) == 1:
        out["lr_factor"] = factors.pop()
    return out


def format_rates(param_groups: list[dict]) -> str:
    """Start-of-run line with each group's base rate (its initial_lr; train events log the current ones)."""
    rates = " | ".join(f"{g.get('role', i)} {g.get('initial_lr', g['lr']):.4g}" for i, g in enumerate(param_groups))
    return f"learning rates (x the schedule's lr_factor): {rates}"


def window_fields(window: tuple[int, int]) -> dict[str, int]:
    """Train-event fields for a sliding-window model's current (long, short) window in tokens; {} without one."""
    if not any(window):
        return {}
    return {"window_tokens": int(window[0]), "window_short_tokens": int(window[1])}


def tokens_per_s(event: dict) -> float:
    """Throughput so far: tokens seen per second of training wall-clock."""
    return event["tokens"] / (event["train_time_ms"] / 1000) if event["train_time_ms"] > 0 else 0.0


def _rate(x: float) -> str:
    return f"{x / 1e6:.2f}M" if x >= 1e6 else f"{x / 1e3:.1f}k"


def format_event(event: dict, max_steps: int) -> str:
    """Speedrun-style console line, e.g. `step:125/1000 val_loss:4.1234 train_time:5123ms step_avg:41.00ms`;
    train lines add the schedule factor, the window (if any) and tokens/s, so piped output shows throughput."""
    head = f"step:{event['step']}/{max_steps}"
    tail = ""
    if event["event"] == "val":
        body = f"val_loss:{event['val_loss']:.4f}"
        if "val_ema_loss" in event:  # train.tail_ema's readout
            body += f" val_ema_loss:{event['val_ema_loss']:.4f}"
    else:
        body = f"train_loss:{event['train_loss']:.4f}"
        if "lr_factor" in event:
            body += f" lr_factor:{event['lr_factor']:.3f}"
        if "window_tokens" in event:
            body += f" window:{event['window_tokens']}/{event['window_short_tokens']}"
        tail = f" tokens/s:{_rate(tokens_per_s(event))}"
    step_avg = event["train_time_ms"] / max(event["step"], 1)
    return f"{head} {body} train_time:{event['train_time_ms']:.0f}ms step_avg:{step_avg:.2f}ms{tail}"


def format_diag(event: dict, max_steps: int, per_group: int = 8) -> str:
    """Compact console form of a diag event: ungrouped scalars first, then one `| prefix a:x b:y` part per
    name prefix (`update_norm/attn_qkv` -> update_norm); a prefix with more than `per_group` entries
    (e.g. per-layer rates) is shown as its count and range, the values being in metrics.jsonl and wandb."""
    plain, groups = [], {}
    for key, value in event.items():
        if key in EVENT_FIELDS or not isinstance(value, (int, float)):
            continue
        prefix, _, rest = key.rpartition("/")
        if prefix:
            groups.setdefault(prefix, []).append((rest, value))
        else:
            plain.append(f"{key}:{value:.3g}")
    parts = [f"step:{event['step']}/{max_steps} diag " + " ".join(plain)]
    for prefix, items in groups.items():
        if len(items) > per_group:
            values = [v for _, v in items]
            parts.append(f"{prefix} {len(items)} values in [{min(values):.3g}, {max(values):.3g}]")
        else:
            parts.append(f"{prefix} " + " ".join(f"{k}:{v:.3g}" for k, v in items))
    return " | ".join(parts)


def format_summary(summary: dict) -> str:
    """One end-of-run line: steps, final/best val loss, the target, training time, tokens/s, peak memory."""
    def num(key: str, fmt: str) -> str:
        value = summary.get(key)
        return "n/a" if value is None or (isinstance(value, float) and not math.isfinite(value)) else format(value, fmt)

    parts = [f"done: {summary.get('steps', 'n/a')} steps"]
    if summary.get("scored_metric") == "val_ema_loss":  # train.tail_ema: best and target read the readout
        parts.append(f"val_loss final {num('final_val_loss', '.4f')} | val_ema_loss final "
                     f"{num('final_val_ema_loss', '.4f')} best {num('best_val_loss', '.4f')}")
    else:
        parts.append(f"val_loss final {num('final_val_loss', '.4f')} best {num('best_val_loss', '.4f')}")
    if summary.get("target_val_loss") is not None:
        hit = summary.get("target_val_loss_step")
        parts.append(f"target {summary['target_val_loss']:g} " + (
            f"reached at step {hit} ({summary['target_val_loss_train_time_ms'] / 1000:.1f}s)" if hit is not None
            else "not reached"))
    parts.append(f"train_time {(summary.get('train_time_ms') or 0) / 1000:.1f}s")
    if summary.get("tokens_per_s"):
        parts.append(f"{_rate(summary['tokens_per_s'])} tokens/s")
    memory = [f"{summary[k]:.0f} MiB {where}" for k, where in (("peak_memory_mib", "GPU"),
                                                               ("peak_host_memory_mib", "host")) if summary.get(k)]
    if memory:
        parts.append("peak memory " + ", ".join(memory))
    if summary.get("skipped_steps"):
        parts.append(f"{summary['skipped_steps']} non-finite steps skipped")
    return " | ".join(parts)


def format_status(event: dict, max_steps: int, eta_s: float | None) -> str:
    """Compact progress line, e.g. `[ 120/1000  12%] loss 3.8123 | 412.5k tok/s | ETA 06:01`."""
    width = len(str(max_steps))
    return (f"[{event['step']:>{width}}/{max_steps} {100 * event['step'] / max_steps:3.0f}%] "
            f"loss {event['train_loss']:.4f} | {tokens_per_s(event) / 1000:.1f}k tok/s | ETA {_clock(eta_s)}")


def _clock(seconds: float | None) -> str:
    if seconds is None:
        return "--:--"
    minutes, secs = divmod(int(round(max(seconds, 0.0))), 60)
    hours, minutes = divmod(minutes, 60)
    return f"{hours}:{minutes:02d}:{secs:02d}" if hours else f"{minutes:02d}:{secs:02d}"


class ConsoleSink:
    """Speedrun lines for every val/train event, a compact line per diag event and one summary line at
    the end; on a terminal, also a status line redrawn in place.

    The status line (step, loss, tokens/s, ETA) uses a carriage return, so it is shown only when the
    stream is a TTY: in log files and pipes the output is the lines above (train lines carry tokens/s).
    ETA is wall-clock (validation included), measured from the first train event on.
    """

    CLEAR = "\r\x1b[2K"

    def __init__(self, max_steps: int, stream=None, status: bool | None = None):
        self.max_steps = max_steps
        self.stream = sys.stdout if stream is None else stream  # looked up now: tests swap sys.stdout
        self.status = _isatty(self.stream) if status is None else status
        self.shown = ""           # the status line now on screen ("" when none)
        self.anchor = None        # (step, monotonic time) of the first train event, for the ETA

    def log(self, event: dict) -> None:
        if event["event"] not in ("val", "train", "diag"):
            return
        line = format_diag(event, self.max_steps) if event["event"] == "diag" else format_event(event, self.max_steps)
        if not self.status:
            print(line, file=self.stream, flush=True)
            return
        if event["event"] == "train":
            self.shown = format_status(event, self.max_steps, self._eta_s(event["step"]))
        self.stream.write(f"{self.CLEAR}{line}\n{self.shown}")
        self.stream.flush()

    def _eta_s(self, step: int) -> float | None:
        now = time.monotonic()
        if self.anchor is None:
            self.anchor = (step, now)
            return None
        done = step - self.anchor[0]
        return (now - self.anchor[1]) / done * (self.max_steps - step) if done > 0 else None

    def close(self, summary: dict) -> None:
        if self.status and self.shown:
            self.stream.write(self.CLEAR)
            self.shown = ""
        print(format_summary(summary), file=self.stream, flush=True)


def _isatty(stream) -> bool:
    try:
        return stream.isatty()
    except (AttributeError, ValueError):  # no isatty, or a closed stream
        return False


class JsonlSink:
    """Appends one JSON object per line and flushes, so a crash loses at most the event in flight."""

    def __init__(self, path: Path):
        self.path = path
        self.file = open(path, "a", encoding="utf-8")

    def log(self, event: dict) -> None:
        clean = {k: (None if isinstance(v, float) and not math.isfinite(v) else v) for k, v in event.items()}
        self.file.write(json.dumps(clean) + "\n")
        self.file.flush()

    def close(self, summary: dict) -> None:
        self.log({"event": "summary", **summary})
        self.file.close()


def summary_extras(summary: dict, tracker: ValTracker) -> dict:
    """The trainer's summary plus best/target figures and throughput (tokens per training second)."""
    out = {**summary, **tracker.summary()}
    if out.get("tokens") and out.get("train_time_ms"):
        out["tokens_per_s"] = out["tokens"] / (out["train_time_ms"] / 1000)
    return out


class MetricsLogger:
    def __init__(self, sinks: list[Sink], target_val_loss: float | None = None, metric: str = "val_loss"):
        self.sinks = sinks
        self.tracker = ValTracker(target_val_loss, metric)

    def log(self, event: dict) -> None:
        self.tracker.update(event)
        for sink in self.sinks:
            sink.log(event)

    def close(self, summary: dict) -> None:
        summary = {**summary_extras(summary, self.tracker), "peak_host_memory_mib": peak_host_memory_mib()}
        for sink in self.sinks:
            sink.close(summary)
