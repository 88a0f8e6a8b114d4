"""Metrics events: one dict per event, fanned out to the console, metrics.jsonl and any extra sinks.

Only rank 0 builds a logger with sinks; other ranks get a disabled one, so call
sites never branch on rank. Events:

    {"event": "val",   "step", "tokens", "train_time_ms", "val_loss"}
    {"event": "train", "step", "tokens", "train_time_ms", "step_avg_ms", "train_loss", "lr"}

`step` counts optimizer steps done, `tokens` = step * global batch tokens, and
`train_time_ms` is training wall-clock only (validation and compile excluded).
"""
from __future__ import annotations

import json
import math
import sys
from pathlib import Path
from typing import Protocol


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


class ConsoleSink:
    def __init__(self, max_steps: int, stream=sys.stdout):
        self.max_steps, self.stream = max_steps, stream

    def log(self, event: dict) -> None:
        if event["event"] in ("val", "train"):
            print(format_event(event, self.max_steps), file=self.stream, flush=True)

    def close(self, summary: dict) -> None:
        pass


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


class MetricsLogger:
    def __init__(self, sinks: list[Sink]):
        self.sinks = sinks

    def log(self, event: dict) -> None:
        for sink in self.sinks:
            sink.log(event)

    def close(self, summary: dict) -> None:
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
