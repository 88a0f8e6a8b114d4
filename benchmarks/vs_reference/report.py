"""Parse a record script's log and our run folder; write the side-by-side report (benchmarks/vs_reference/run.py).

The record scripts print, on rank 0 (times in ms of training, validation excluded; their clock
restarts after step 10, so compilation and warm-up fall in steps 1-10):
    step:S/N val_loss:X train_time:Tms step_avg:Ams                 (validation before step S+1)
    step:S/N [train_loss:X ]train_time:Tms step_avg:Ams             (after training step S)
    peak memory consumption: M MiB  |  peak memory allocated: M MiB reserved: R MiB
Our run folder has metrics.jsonl: "val" and "train" events with train_time_ms (compilation excluded:
it runs on untimed warm-up steps), and a summary with compile_warmup_ms and peak_memory_mib.

Step time, the same rule on both sides: (train_time after the last step - train_time after step
STEADY_FROM) / (steps between), i.e. the mean of steps STEADY_FROM+1..N, after compilation and the
first steps' start-up on both. Compile time: the reference's first step minus one steady step; ours,
the warm-up steps' wall time minus that many steady steps.
"""
from __future__ import annotations

import math
import re
from dataclasses import dataclass, field
from pathlib import Path
from typing import Optional

from analysis.runs import METRICS_FILE, read_events

STEADY_FROM = 11  # the reference's clock restarts after step 10; its step-11 line is the first clean one
LINE = re.compile(r"^step:(\d+)/(\d+)(?: val_loss:(\S+))?(?: train_loss:(\S+))? train_time:([0-9.]+)ms")
PEAK = re.compile(r"peak memory (?:consumption|allocated): (\d+) MiB")


@dataclass
class RunResult:
    status: str = "not run"
    wall_s: float = float("nan")


@dataclass
class Side:
    """One run's figures. val: step -> val loss; train_ms: step -> training time after that step."""
    val: dict[int, float] = field(default_factory=dict)
    train_ms: dict[int, float] = field(default_factory=dict)
    peak_mib: Optional[float] = None
    compile_ms: Optional[float] = None  # ours: the warm-up wall time (before subtracting its steps)
    warmup_steps: int = 0
    run: RunResult = field(default_factory=RunResult)

    def steady_ms(self) -> Optional[float]:
        """Mean ms per step over steps STEADY_FROM+1 .. the last logged (None when too few)."""
        last = max(self.train_ms, default=0)
        if last <= STEADY_FROM or STEADY_FROM not in self.train_ms:
            return None
        return (self.train_ms[last] - self.train_ms[STEADY_FROM]) / (last - STEADY_FROM)


def parse_reference_log(text: str) -> Side:
    side = Side()
    for line in text.splitlines():
        m = LINE.match(line.strip())
        if m:
            step, val, t = int(m[1]), m[3], float(m[5])
            if val is not None:
                side.val[step] = float(val)
            else:
                side.train_ms[step] = t
        elif (p := PEAK.search(line)) is not None:
            side.peak_mib = float(p[1])
    return side


def reference_compile_ms(side: Side) -> Optional[float]:
    steady = side.steady_ms()
    return None if steady is None or 1 not in side.train_ms else side.train_ms[1] - steady


def parse_ours(run_dir: Path) -> Side:
    side = Side()
    if not (Path(run_dir) / METRICS_FILE).exists():
        return side
    for e in read_events(run_dir):
        if e.get("event") == "val" and e.get("val_loss") is not None:
            side.val[e["step"]] = e["val_loss"]
        elif e.get("event") == "train":
            side.train_ms[e["step"]] = e["train_time_ms"]
        elif e.get("event") == "summary":
            side.peak_mib = e.get("peak_memory_mib")
            side.compile_ms = e.get("compile_warmup_ms") or None
    cfg = Path(run_dir) / "config.yaml"
    if cfg.exists():
        m = re.search(r"^\s*compile_warmup_steps:\s*(\d+)", cfg.read_text(), re.M)
        side.warmup_steps = int(m[1]) if m else 0
    return side


def ours_compile_ms(side: Side) -> Optional[float]:
    steady = side.steady_ms()
    return None if side.compile_ms is None or steady is None else side.compile_ms - side.warmup_steps * steady


def _fmt(x: Optional[float], spec: str, unit: str = "") -> str:
    return "n/a" if x is None or (isinstance(x, float) and math.isnan(x)) else f"{x:{spec}}{unit}"


def report_lines(meta: dict, ref: Side, ours: Side) -> list[str]:
    rs, os_ = ref.steady_ms(), ours.steady_ms()
    ratio = os_ / rs if rs and os_ else None
    rc, oc = reference_compile_ms(ref), ours_compile_ms(ours)
    lines = [f"# {meta['title']}", ""]
    if meta.get("note"):
        lines += [meta["note"], ""]
    lines += [
        f"Reference: `{meta['reference']}`; ours: `experiment={meta['experiment']}`; data `{meta['data']}`; "
        f"{meta['gpus']} GPU(s) (device={meta['device']}); {meta['steps']} of {meta['of_steps']} steps, the "
        f"schedule unchanged; validation every {meta['val_every']} steps on {meta['val_tokens']:,} tokens. "
        "The reference ran first, then ours, on the same machine.", "",
        "Edits to the reference (a copy, in a scratch folder):", ""]
    lines += [f"- {e}" for e in meta["edits"]] or ["- none"]
    lines += [f"- {meta['gpu_plan']}", "", f"Our overrides: `{' '.join(meta['overrides'])}`", "",
              "| | reference | ours | ours / reference |", "|---|---|---|---|",
              f"| status | {ref.run.status} | {ours.run.status} | |",
              f"| step time (mean of steps {STEADY_FROM + 1}..N, ms) | {_fmt(rs, '.1f')} | {_fmt(os_, '.1f')} | "
              f"**{_fmt(ratio, '.3f')}** |",
              f"| compile time (s, estimated) | {_fmt(rc and rc / 1000, '.1f')} | {_fmt(oc and oc / 1000, '.1f')} | |",
              f"| wall time of the whole run (s) | {_fmt(ref.run.wall_s, '.0f')} | {_fmt(ours.run.wall_s, '.0f')} | |",
              f"| peak GPU memory (MiB) | {_fmt(ref.peak_mib, '.0f')} | {_fmt(ours.peak_mib, '.0f')} | |", "",
              "| step | reference val loss | ours | ours - reference |", "|---|---|---|---|"]
    shared = sorted(set(ref.val) & set(ours.val))
    for s in shared:
        lines.append(f"| {s} | {ref.val[s]:.4f} | {ours.val[s]:.4f} | {ours.val[s] - ref.val[s]:+.4f} |")
    if not shared:
        lines.append("| - | no step was validated by both runs | | |")
    only = sorted(set(ref.val) ^ set(ours.val))
    lines += ["", f"Steps validated by one side only: {only or 'none'}.", "",
              f"Compile time: the reference's first step minus one steady step (its step 1 includes "
              f"torch.compile); ours: the {ours.warmup_steps} untimed warm-up steps' wall time minus as many "
              "steady steps. Raw logs: reference.log, ours.log; our run folder: ours/.", ""]
    return lines


def write_report(out: Path, meta: dict, ref: Side, ours: Side) -> Path:
    """OUT/report.md and OUT/report.png; returns the markdown's path."""
    from common.atomic_io import write_text_atomic
    lines = report_lines(meta, ref, ours)
    png = out / "report.png"
    if plot(png, meta, ref, ours):
        lines += [f"![val loss and training time]({png.name})", ""]
    md = out / "report.md"
    write_text_atomic(md, "\n".join(lines))
    print("\n".join(lines))
    print(f"wrote {md}")
    return md


def plot(path: Path, meta: dict, ref: Side, ours: Side) -> bool:
    """Val loss vs step and training time vs step, both runs; False when there is nothing to draw."""
    if not (ref.val or ours.val or ref.train_ms or ours.train_ms):
        return False
    try:
        import matplotlib
    except ImportError:  # a bare GPU machine: the markdown is the report; --report-only redraws it elsewhere
        print("matplotlib is not installed: no PNG (rerun with --report-only where it is)")
        return False
    matplotlib.use("Agg")
    import matplotlib.pyplot as plt
    fig, (a, b) = plt.subplots(1, 2, figsize=(11, 4))
    for side, name, style in ((ref, "reference", "o-"), (ours, "ours", "s--")):
        if side.val:
            steps = sorted(side.val)
            a.plot(steps, [side.val[s] for s in steps], style, label=name, markersize=4)
        clean = sorted(s for s in side.train_ms if s >= STEADY_FROM)
        if clean:
            t0 = side.train_ms[clean[0]]
            b.plot(clean, [(side.train_ms[s] - t0) / 1000 for s in clean], style, label=name, markersize=2)
    a.set(xlabel="step", ylabel="val loss", title="validation loss")
    b.set(xlabel="step", ylabel=f"training time since step {STEADY_FROM} (s)", title="training time")
    for ax in (a, b):
        ax.grid(alpha=0.3)
        ax.legend()
    fig.suptitle(meta["title"], fontsize=10)
    fig.tight_layout()
    tmp = path.with_suffix(".tmp.png")
    fig.savefig(tmp, dpi=110)
    plt.close(fig)
    tmp.replace(path)
    return True
