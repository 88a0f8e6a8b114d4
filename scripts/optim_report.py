"""Report for scripts/bench_optim.py: markdown tables + a PNG of val loss vs step and vs train time.

results: {(optimizer, lr, seed): run} with run = {"steps", "val", "time_s", "final", "ms_per_step"}.
"Steps to target" is the first step at which a run's val loss reaches the target (AdamW's final
val loss at its chosen lr, averaged over seeds), linearly interpolated between validation points.
"""
from __future__ import annotations

import math
import sys
from pathlib import Path
from statistics import mean, median

import matplotlib

matplotlib.use("Agg")
import matplotlib.pyplot as plt  # noqa: E402

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))
from harness.atomic_io import write_text_atomic  # noqa: E402
from harness.curves import Curve, Point, first_crossing  # noqa: E402

COLORS = {"adamw": "tab:blue", "muon": "tab:orange", "dual": "tab:green"}


def steps_to(run: dict, target: float, key: str = "steps") -> float:
    """First (interpolated) step, or train-seconds with key="time_s", where val <= target; inf if never.

    The crossing rule is harness.curves.first_crossing (the one compare.py and the trainer use)."""
    curve = Curve("run", [Point(s, 0, 1000 * t, v) for s, t, v in zip(run["steps"], run["time_s"], run["val"])])
    hit = first_crossing(curve, target, interpolate=True)
    if hit is None:
        return math.inf
    return float(hit.step) if key == "steps" else hit.time_ms / 1000


def mean_curve(rs: list[dict]) -> dict:
    """Seed-averaged val curve over the validation steps every run has."""
    common = sorted(set.intersection(*(set(r["steps"]) for r in rs)))
    return {"steps": common, "val": [mean(val_at(r, s) for r in rs) for s in common],
            "time_s": [mean(dict(zip(r["steps"], r["time_s"]))[s] for r in rs) for s in common]}


def val_at(run: dict, step: int) -> float:
    return dict(zip(run["steps"], run["val"])).get(step, math.nan)


def fmt(values: list[float], digits: int = 3) -> str:
    """mean (± half the spread) of per-seed values."""
    vals = [v for v in values if not math.isnan(v)]
    if not vals:
        return "-"
    if any(math.isinf(v) for v in vals):
        return "not reached" if all(math.isinf(v) for v in vals) else \
            " / ".join("not reached" if math.isinf(v) else f"{v:.{digits}f}" for v in vals)
    m = mean(vals)
    return f"{m:.{digits}f}" if len(vals) == 1 else f"{m:.{digits}f} ± {(max(vals) - min(vals)) / 2:.{digits}f}"


def write_report(path: Path, results: dict, lrs: dict, chosen: dict, setup: dict) -> None:
    path.parent.mkdir(parents=True, exist_ok=True)
    opts = [o for o in ("adamw", "muon", "dual") if o in chosen] + [o for o in chosen if o not in COLORS]
    runs = {o: [results[k] for k in sorted(results) if k[0] == o and k[1] == chosen[o]] for o in opts if chosen[o]}
    seeds = {o: sorted(k[2] for k in results if k[0] == o and k[1] == chosen[o]) for o in runs}
    device = setup.get("device", "cpu")
    ncol = max(len(v) for v in lrs.values())
    L = [f"# Optimizer benchmark on {device.upper()}: AdamW vs Muon vs dual", "",
         f"Command: `{setup['command']}` ({setup['wall_min']:.0f} min wall).  ",
         f"Model: `experiment=cpu_fineweb model.tie_embeddings=false` (GPT-2 small family: 4 layers x 128, 4 heads, "
         f"GPT-2 vocabulary 50257, learned positions, LayerNorm, GELU, untied head), FineWeb sample "
         f"(`{setup.get('data', '?')}`), same data order for every run.  ",
         f"Budget: {setup['steps']} steps x {setup['batch_seqs']} x {setup['seq_len']} tokens = "
         f"{setup['steps'] * setup['batch_seqs'] * setup['seq_len']:,} tokens; one schedule for all: linear warmup over "
         f"the first {setup['warmup_frac']:.0%} of steps, constant, linear warmdown over the last 30% to 0 (cpu_fineweb). Validation: the first {setup['val_tokens']:,} val tokens every "
         f"{setup['val_every']} steps (the same tokens for every run).  ",
         f"Runs: {setup['jobs']} at a time, {setup['threads']} CPU thread(s) each, on {setup.get('machine', 'a 2-core machine')}; "
         f"with several runs sharing it, wall times are indicative only.  " + (f"Per-optimizer overrides: {setup['extra']}." if setup['extra'] else ""),
         "", "## Learning-rate sweep (seed 0, full length; final val loss)", "",
         "| optimizer | " + " | ".join(f"lr #{i + 1}" for i in range(ncol)) + " | chosen |",
         "|---|" + "---|" * (ncol + 1)]
    for o in opts:
        cells = []
        for lr in lrs.get(o, []):
            r = results.get((o, lr, 0))
            cells.append(f"{lr:g}: {r['final']:.4f}" if r else f"{lr:g}: failed")
        cells += ["-"] * (ncol - len(cells))  # shorter sweeps keep the "chosen" column aligned
        edge = ""
        if chosen[o] is not None and lrs[o] and chosen[o] in (min(lrs[o]), max(lrs[o])) and len(lrs[o]) > 1:
            edge = " (edge of the sweep)"
        L.append(f"| {o} | " + " | ".join(cells) + f" | {chosen[o]:g}{edge} |" if chosen[o] else f"| {o} | all failed | - |")
    if setup.get("missing"):
        L += ["", f"**Incomplete benchmark**: {len(setup['missing'])} planned runs did not finish in the time "
              f"available ({', '.join(setup['missing'])}); a sweep with missing points chose among the finished "
              "ones. Rerun the same command to complete it (finished runs are reused)."]
    tail = probe_section(setup.get("probes") or {}) + ([setup["notes"]] if setup.get("notes") else [])
    if "adamw" not in runs:
        write_text_atomic(path, "\n".join(L + ["", "AdamW did not finish: no target to compare against.", ""] + tail))
        return
    target = mean(r["final"] for r in runs["adamw"])
    curves = {o: mean_curve(rs) for o, rs in runs.items()}
    # Steps to target are read off the seed-averaged curves (AdamW's own reaches its target at its
    # last validation by construction); per-seed values are listed beside them.
    adam_steps = steps_to(curves["adamw"], target)
    marks = [s for s in (50, 100, 150, 200, 300, 400) if s <= setup["steps"]]
    if setup["steps"] not in marks:
        marks.append(setup["steps"])
    L += ["", f"## Chosen lrs, {max(len(s) for s in seeds.values())} seeds (mean ± half the spread)", "",
          f"Target = AdamW's final val loss at its chosen lr, mean over seeds: **{target:.4f}**.", "",
          "| optimizer | lr | seeds | " + " | ".join(f"val @ {s}" for s in marks) +
          " | steps to target (mean curve; per seed) | vs AdamW | train s to target | ms / step |",
          "|---|---|---|" + "---|" * (len(marks) + 4)]
    for o, rs in runs.items():
        st = steps_to(curves[o], target)
        per_seed = ", ".join("-" if math.isinf(x) else f"{x:.0f}" for x in (steps_to(r, target) for r in rs))
        tt = steps_to(curves[o], target, "time_s")
        L.append(f"| {o} | {chosen[o]:g} | {','.join(map(str, seeds[o]))} | " +
                 " | ".join(fmt([val_at(r, s) for r in rs]) for s in marks) +
                 f" | {fmt([st], 0)} ({per_seed}) | {fmt([st / adam_steps], 2)}x | {fmt([tt], 0)} | "
                 f"{median(r['ms_per_step'] for r in rs):.0f} |")
    L += ["", "## Verdicts against the issue's targets", ""]
    if "dual" in runs:
        for o in [x for x in ("dual", "muon") if x in runs]:
            ratio = steps_to(curves[o], target) / adam_steps
            verdict = ("target of the issue (<= 0.6x): **" + ("met" if ratio <= 0.6 else "NOT met") + "**; ") if o == "dual" else ""
            L.append(f"- {o} reaches AdamW's final val loss in {ratio:.2f}x AdamW's steps "
                     f"({steps_to(curves[o], target):.0f} vs {adam_steps:.0f}, seed-averaged curves): {verdict}"
                     f"in train time {steps_to(curves[o], target, 'time_s') / steps_to(curves['adamw'], target, 'time_s'):.2f}x.")
    if "dual" in runs and "muon" in runs:
        diffs = {s: mean(val_at(r, s) for r in runs["dual"]) - mean(val_at(r, s) for r in runs["muon"]) for s in marks}
        worse = [s for s, d in diffs.items() if d > 0]
        L.append(f"- dual no worse than Muon at equal steps: **{'met' if not worse else 'NOT met at steps ' + ', '.join(map(str, worse))}** "
                 "(dual - Muon val loss, mean over seeds: " + ", ".join(f"@{s} {d:+.3f}" for s, d in diffs.items()) + ").")
        spread = max(max(r["final"] for r in rs) - min(r["final"] for r in rs) for rs in runs.values())
        L.append(f"- Seed noise: the largest seed-to-seed spread of a final val loss is {spread:.3f}; differences "
                 "smaller than that are not resolved by 2 seeds.")
    png = path.with_suffix(".png")
    plot(png, runs, seeds, chosen, target, device)
    L += ["", f"![val loss vs step and vs train time]({png.name})", ""]
    write_text_atomic(path, "\n".join(L + tail))
    print(f"wrote {path} and {png}")


def plot(png: Path, runs: dict, seeds: dict, chosen: dict, target: float, device: str = "cpu") -> None:
    fig, axes = plt.subplots(1, 2, figsize=(12, 4.5))
    for o, rs in runs.items():
        for r, s in zip(rs, seeds[o]):
            style = "-" if s == seeds[o][0] else "--"
            label = f"{o} lr {chosen[o]:g} seed {s}"
            axes[0].plot(r["steps"], r["val"], style, color=COLORS.get(o), label=label)
            axes[1].plot(r["time_s"], r["val"], style, color=COLORS.get(o), label=label)
    for ax, xl in zip(axes, ("step", f"train time (s, {device.upper()})")):
        ax.axhline(target, color="gray", lw=0.8, ls=":")
        ax.set_xlabel(xl)
        ax.set_ylabel("val loss (nats/token)")
        ax.set_ylim(top=min(8.0, ax.get_ylim()[1]))
        ax.grid(alpha=0.3)
    axes[0].legend(fontsize=8)
    axes[0].set_title("val loss vs step")
    axes[1].set_title("val loss vs train time")
    fig.tight_layout()
    fig.savefig(png, dpi=120)
    plt.close(fig)


PROBE_KEYS = ("name", "lr", "rate_mode", "embed_map", "embed_lr", "embed_eps", "scale", "ns_method",
              "momentum_warmup_steps")


def probe_section(probes: dict) -> list[str]:
    """Table of short exploratory runs: their optimizer settings and val losses."""
    rows = [(folder, name, cfg, res) for folder, items in probes.items() for name, cfg, res in items]
    if not rows:
        return []
    steps = sorted({s for *_, res in rows for s in res["steps"] if s > 0})
    L = ["", "## Short probes (exploration before the benchmark; val loss)", "",
         "| run | optimizer settings | " + " | ".join(f"val @ {s}" for s in steps) + " | ms / step |",
         "|---|---|" + "---|" * (len(steps) + 1)]
    for folder, name, cfg, res in rows:
        settings = ", ".join(f"{k}={cfg[k]}" for k in PROBE_KEYS if k in cfg and (k in ("name", "lr") or cfg["name"] != "adamw"))
        L.append(f"| {Path(folder).name}/{name} | {settings} | " +
                 " | ".join(f"{val_at(res, s):.3f}" if not math.isnan(val_at(res, s)) else "-" for s in steps) +
                 f" | {res['ms_per_step']:.0f} |")
    return L + [""]
