"""Metrics events: one dict per event, fanned out to the console, metrics.jsonl and any extra sinks.

Only rank 0 builds a logger with sinks; other ranks get a disabled one, so call
sites never branch on rank. Events:

    {"event": "run",   "git_commit", "git_dirty", "hardware", "world_size", ...}   (first, see run_info.py)
    {"event": "val",   "step", "tokens", "train_time_ms", "val_loss"}
    {"event": "train", "step", "tokens", "train_time_ms", "step_avg_ms", "train_loss", "lr"}
    {"event": "summary", "final_val_loss", "best_val_loss", "target_reached_step", ...}   (last)

`step` counts optimizer steps done, `tokens` = step * global batch tokens, and
`train_time_ms` is training wall-clock only (validation and compile excluded).
"""
from __future__ import annotations

import json
import math
import sys
import time
from pathlib import Path
from typing import Protocol

from harness.run_info import peak_host_memory_mib


class Sink(Protocol):
    def log(self, event: dict) -> None: ...
    def close(self, summary: dict) -> None: ...


def format_event(event: dict, max_steps: int) -> str:
    """Speedrun-style console line, e.g. `step:125/1000 val_loss:4.1234 train_time:5123ms step_avg:41.0ms`."""
    head = f"step:{event['step']}/{max_steps}"
    if event["event"] == "val":
        body = f"val_loss:{event['val_loss']:.4f}"
    else:
        body = f"train_loss:{event['train_loss']:.4f} lr:{event['lr']:.3g}"
    step_avg = event["train_time_ms"] / max(event["step"], 1)
    return f"{head} {body} train_time:{event['train_time_ms']:.0f}ms step_avg:{step_avg:.2f}ms"


def format_status(event: dict, max_steps: int, eta_s: float | None) -> str:
    """Compact progress line, e.g. `[ 120/1000  12%] loss 3.8123 | 412.5k tok/s | ETA 06:01`."""
    width = len(str(max_steps))
    rate = event["tokens"] / (event["train_time_ms"] / 1000) if event["train_time_ms"] > 0 else 0.0
    return (f"[{event['step']:>{width}}/{max_steps} {100 * event['step'] / max_steps:3.0f}%] "
            f"loss {event['train_loss']:.4f} | {rate / 1000:.1f}k tok/s | ETA {_clock(eta_s)}")


def _clock(seconds: float | None) -> str:
    if seconds is None:
        return "--:--"
    minutes, secs = divmod(int(round(max(seconds, 0.0))), 60)
    hours, minutes = divmod(minutes, 60)
    return f"{hours}:{minutes:02d}:{secs:02d}" if hours else f"{minutes:02d}:{secs:02d}"


class ConsoleSink:
    """Speedrun lines for every event; on a terminal, also a status line redrawn in place.

    The status line (step, loss, tokens/s, ETA) uses a carriage return, so it is shown only when the
    stream is a TTY: in log files and pipes the output is the periodic speedrun lines, unchanged.
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
        if event["event"] not in ("val", "train"):
            return
        line = format_event(event, self.max_steps)
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
            self.stream.flush()
            self.shown = ""


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


class ValTracker:
    """Best val loss, and the first validation at which val loss reached the target (val_loss <= target).

    The one place these are computed: MetricsLogger feeds it live events for every sink's summary, and
    scripts/summarize.py feeds it the events of a metrics.jsonl. Validation runs every train.val_every
    steps, so "reached at" means at the first validation that saw it.
    """

    def __init__(self, target_val_loss: float | None):
        self.target = target_val_loss
        self.best: float | None = None
        self.reached: dict | None = None  # the first val event at or below the target

    def update(self, event: dict) -> None:
        loss = event.get("val_loss")
        if event.get("event") != "val" or loss is None or not math.isfinite(loss):
            return
        self.best = loss if self.best is None else min(self.best, loss)
        if self.reached is None and self.target is not None and loss <= self.target:
            self.reached = event

    def summary(self) -> dict:
        hit = self.reached or {}
        return {"best_val_loss": self.best, "target_val_loss": self.target,
                "target_reached_step": hit.get("step"), "target_reached_train_time_ms": hit.get("train_time_ms"),
                "target_reached_tokens": hit.get("tokens")}


def summary_extras(summary: dict, tracker: ValTracker) -> dict:
    """The trainer's summary plus best/target figures and throughput (tokens per training second)."""
    out = {**summary, **tracker.summary()}
    if out.get("tokens") and out.get("train_time_ms"):
        out["tokens_per_s"] = out["tokens"] / (out["train_time_ms"] / 1000)
    return out


class MetricsLogger:
    def __init__(self, sinks: list[Sink], target_val_loss: float | None = None):
        self.sinks = sinks
        self.tracker = ValTracker(target_val_loss)

    def log(self, event: dict) -> None:
        self.tracker.update(event)
        for sink in self.sinks:
            sink.log(event)

    def close(self, summary: dict) -> None:
        summary = {**summary_extras(summary, self.tracker), "peak_host_memory_mib": peak_host_memory_mib()}
        for sink in self.sinks:
            sink.close(summary)


def read_metrics(path: str | Path) -> list[dict]:
    """All events of a metrics.jsonl (skips a torn last line left by a crash)."""
    events = []
    for line in Path(path).read_text(encoding="utf-8").splitlines():
        try:
            events.append(json.loads(line))
        except json.JSONDecodeError:
            continue
    return events
