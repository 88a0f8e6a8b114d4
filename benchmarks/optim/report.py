"""Report of benchmarks/optim/run.py: markdown tables and a PNG of the curves, written atomically.

Inputs: arms (benchmarks/optim/arms.Arm, in table order), results {(arm, lr, seed): run}
(benchmarks/optim/run.py `load_run`: {"curve", "final", "ms_per_step"}), grids {arm: [lr, ...]},
chosen {arm: lr or None} and setup (command, base overrides, reference arm, seeds, steps, machine,
wall minutes, missing runs, notes). Curves, their seed mean and interpolation are analysis.curves';
the tests are analysis.stats'.

Definitions (per arm, at its chosen lr, over its seeds):
- target: the reference arm's (tuned Muon's) final val loss, mean over its seeds; N_ref: the step
  where the reference's seed-averaged curve reaches it (interpolated).
- steps to target: where the arm's seed-averaged curve reaches the target; "vs ref" = that / N_ref.
  Per seed: each seed's own crossing / N_ref (mean [min, max]).
- p final: one-sided Welch t-test, H1: the arm's mean final loss < the reference's.
- p goal: one-sided Welch, H1: the arm's val loss at step (--goal-ratio) x N_ref (interpolated on each seed's
  curve of the full-length run, so mid-warmdown: conservative) < the reference's final losses.
  The goal (--goal-ratio; issue 13: 0.90, issue 27: 0.83): a dual-family arm with p goal < 0.01 over >= 4 seeds.
- --also-vs ARM: the same steps ratio and p final against a second reference arm (issue 27: track 3's #46).
- --ablation CHILD=PARENT: CHILD's final loss against PARENT's, each at its own chosen lr (difference of the
  means +- its standard error, one-sided Welch p both ways), and what CHILD changes: every key of the composed
  run config whose value differs, lr aside. Without it, dual's variants are compared against dual (issue 13).
- Readout: an arm scored on a tail-EMA readout (track 3's #46) is also read on its raw weights, paired per seed.
- Crossing gap: the steps between the two validations that bracket an arm's crossing of the target. The verdict
  flags gaps wider than WIDE_GAP x N_ref: the loss is convex there (a warm-down's tail), so the straight line
  puts the crossing early (issue 27 measured 0.025 to 0.03 of a ratio across a 70-step gap on 300 steps).
"""
from __future__ import annotations

import io
import math
from pathlib import Path

import matplotlib

matplotlib.use("Agg")
import matplotlib.pyplot as plt  # noqa: E402

from analysis.crossing import Curve, first_crossing  # noqa: E402
from analysis.curves import loss_at, mean_curve  # noqa: E402
from analysis.stats import single_less, spread, welch_less  # noqa: E402
from common.atomic_io import atomic_open, write_text_atomic  # noqa: E402

GOAL_P, GOAL_SEEDS = 0.01, 4  # the goal's ratio is run.py's --goal-ratio (setup["goal_ratio"])
WIDE_GAP = 0.05  # a crossing interpolated across more than this fraction of N_ref is flagged in the verdict


def steps_to(curve: Curve, target: float, key: str = "steps") -> float:
    """First step (interpolated between validations), or training seconds with key="time_s", where the
    val loss <= target (analysis.crossing.first_crossing, the trainer's and compare.py's rule); inf if never."""
    hit = first_crossing(curve, target, interpolate=True)
    if hit is None:
        return math.inf
    return float(hit.step) if key == "steps" else hit.time_ms / 1000


def crossing_gap(curve: Curve, target: float) -> float:
    """Steps between the validations that bracket the first crossing of target (analysis.crossing's rule): 0 where
    one lands on it or the first validation is already below it, nan if the curve never reaches it."""
    hit = first_crossing(curve, target)  # the first logged validation at or below the target
    if hit is None:
        return math.nan
    earlier = [p.step for p in curve.points if p.step < hit.step]
    return 0.0 if hit.val_loss == target or not earlier else float(hit.step - earlier[-1])


def curve_steps(curve: Curve) -> list[int]:
    return [p.step for p in curve.points]


def summarize(arms: list, results: dict, chosen: dict, reference: str, goal_ratio: float) -> tuple[dict, dict]:
    """Per-arm figures at the chosen lr (see the module docstring) and the reference's (target, N_ref); p goal
    reads each seed's curve at goal_ratio x N_ref."""
    runs = {a.name: [results[k] for k in sorted(results) if k[0] == a.name and k[1] == chosen.get(a.name)]
            for a in arms if chosen.get(a.name) is not None}
    runs = {k: v for k, v in runs.items() if v}
    ref = {"target": math.nan, "n_ref": math.nan, "finals": []}
    if reference in runs:
        ref["finals"] = [r["final"] for r in runs[reference]]
        ref["target"] = sum(ref["finals"]) / len(ref["finals"])
        ref["n_ref"] = steps_to(mean_curve([r["curve"] for r in runs[reference]]), ref["target"])
    out = {}
    for name, rs in runs.items():
        curve = mean_curve([r["curve"] for r in rs])
        finals = [r["final"] for r in rs]
        st = steps_to(curve, ref["target"]) if reference in runs else math.nan
        per_seed = [steps_to(r["curve"], ref["target"]) / ref["n_ref"] for r in rs] if reference in runs else []
        goal_vals = [loss_at(r["curve"], goal_ratio * ref["n_ref"]) for r in rs] if reference in runs else []
        out[name] = {"runs": rs, "curve": curve, "finals": finals, "final": spread(finals),
                     "steps_to": st, "ratio": st / ref["n_ref"] if reference in runs else math.nan,
                     "per_seed": per_seed, "cross_gap": crossing_gap(curve, ref["target"]),
                     "seeds": [k[2] for k in sorted(results) if k[0] == name and k[1] == chosen[name]],
                     "p_final": welch_less(finals, ref["finals"])[2] if name != reference else math.nan,
                     "p_goal": welch_less(goal_vals, ref["finals"])[2] if name != reference else math.nan,
                     "ms_per_step": sorted(r["ms_per_step"] for r in rs)[len(rs) // 2]}
    return out, ref


def _f(x: float, digits: int = 4) -> str:
    return "-" if x is None or (isinstance(x, float) and math.isnan(x)) else \
        ("not reached" if math.isinf(x) else f"{x:.{digits}f}")


def _p(p: float) -> str:
    return "-" if math.isnan(p) else f"{p:.2g}" if p >= 1e-4 else f"{p:.1e}"


def _ratio_cell(per_seed: list[float]) -> str:
    if not per_seed:
        return "-"
    m, _, lo, hi = spread(per_seed)
    missed = sum(1 for x in per_seed if math.isinf(x))
    core = f"{m:.3f} [{lo:.3f}, {hi:.3f}]" if not math.isnan(m) else "not reached"
    return core + (f" ({missed} of {len(per_seed)} seeds never reach it)" if missed and not math.isnan(m) else "")


def marks_for(steps: int, val_steps: list[int]) -> list[int]:
    """Validation steps nearest 25/50/75/90/100% of the run."""
    if not val_steps:
        return []
    return sorted({min(val_steps, key=lambda s: abs(s - f * steps)) for f in (0.25, 0.5, 0.75, 0.9, 1.0)})


def write_report(path: Path, arms: list, results: dict, grids: dict, chosen: dict, setup: dict) -> None:
    path = Path(path)
    path.parent.mkdir(parents=True, exist_ok=True)
    reference, goal_ratio = setup.get("reference", "muon"), setup["goal_ratio"]
    summary, ref = summarize(arms, results, chosen, reference, goal_ratio)
    ncol = max((len(g) for g in grids.values()), default=1)
    L = [f"# Optimizer benchmark: {setup.get('title', 'arms over one base experiment')}", "",
         f"Command: `{setup['command']}` ({setup['wall_min']:.0f} min wall, {setup.get('machine', '?')}).  ",
         f"Base of every run: `{' '.join(setup.get('base', []))}`.  ",
         "Protocol: " + ("each arm sweeps the lr grid of the sweep table below (explicit --lrs grids; otherwise its base "
                         f"lr x {setup.get('lr_mults', '?')})" if setup.get("explicit_grids") else
                         f"every arm gets the same lr sweep (its base lr x {setup.get('lr_mults', '?')})")
         + f", seed 0, full length; the lowest final val loss picks its lr; then seeds 0..{setup.get('seeds', 1) - 1} "
           "at that lr.  "]
    if reference in summary:
        L.append(f"Reference: **{reference}**; target = its mean final val loss **{ref['target']:.4f}**, reached by its "
                 f"seed-averaged curve at step N_ref = {ref['n_ref']:.0f}.")
    L += ["", "## Arms", "", "| arm | what it measures | overrides (after the base) | note |", "|---|---|---|---|"]
    for a in arms:
        note = f"identical config to **{a.alias_of}**: not run" if a.alias_of else ""
        L.append(f"| {a.name} | {a.description} | `{' '.join(a.overrides)}` | {note} |")
    L += ["", "## Learning-rate sweep (seed 0, final val loss)", "",
          "| arm | " + " | ".join(f"lr #{i + 1}" for i in range(ncol)) + " | chosen |", "|---|" + "---|" * (ncol + 1)]
    for a in arms:
        if a.alias_of:
            continue
        grid = grids.get(a.name, [])
        cells = [f"{lr:.4g}: " + (f"{results[(a.name, lr, 0)]['final']:.4f}" if (a.name, lr, 0) in results else "missing")
                 for lr in grid] + ["-"] * (ncol - len(grid))
        c = chosen.get(a.name)
        edge = " (edge)" if c is not None and len(grid) > 1 and c in (min(grid), max(grid)) else ""
        L.append(f"| {a.name} | " + " | ".join(cells) + f" | {c:.4g}{edge} |" if c is not None else
                 f"| {a.name} | " + " | ".join(cells) + " | - |")
    if setup.get("missing"):
        L += ["", f"**Incomplete**: {len(setup['missing'])} planned runs have not finished "
              f"({', '.join(setup['missing'][:12])}{' ...' if len(setup['missing']) > 12 else ''}); rerun the same "
              "command to complete them (finished runs are reused)."]
    steps = setup.get("steps") or max((s for v in summary.values() for s in curve_steps(v["curve"])), default=0)
    marks = marks_for(steps, sorted({s for v in summary.values() for s in curve_steps(v["curve"])}))
    L += ["", "## Results at each arm's chosen lr", "",
          "| arm | lr | seeds | " + " | ".join(f"val @ {m}" for m in marks) + " | final (mean ± sd) | steps to target | "
          f"vs {reference} | per seed: mean [min, max] | p final < {reference} | p goal | ms/step |",
          "|---|---|---|" + "---|" * (len(marks) + 7)]
    for a in arms:
        s = summary.get(a.name)
        if s is None:
            continue
        m, sd, _, _ = s["final"]
        vals = [_f(sum(loss_at(r["curve"], mk) for r in s["runs"]) / len(s["runs"])) for mk in marks]
        L.append(f"| {a.name} | {chosen[a.name]:.4g} | {len(s['runs'])} | " + " | ".join(vals) +
                 f" | {m:.4f} ± {sd:.4f} | {_f(s['steps_to'], 0)} | {_f(s['ratio'], 3)} | {_ratio_cell(s['per_seed'])} | "
                 f"{_p(s['p_final'])} | {_p(s['p_goal'])} | {s['ms_per_step']:.0f} |")
    for other in setup.get("also_vs") or []:
        L += _against_section(arms, summarize(arms, results, chosen, other, goal_ratio), other)
    L += (_pairs_section(arms, summary, setup["ablations"], results, grids, chosen) if setup.get("ablations") else
          _ablation_section(arms, summary, reference))
    L += _readout_section(arms, summary) + _verdict_section(arms, summary, ref, reference, goal_ratio)
    png = path.with_suffix(".png")
    if summary:
        plot(png, arms, summary, ref, reference, setup.get("device", "cpu"), goal_ratio)
        L += ["", f"![val loss vs step]({png.name})", ""]
    if setup.get("notes"):
        L += ["", setup["notes"].rstrip(), ""]
    write_text_atomic(path, "\n".join(L) + "\n")
    print(f"wrote {path}" + (f" and {png}" if summary else ""), flush=True)


def _ablation_section(arms: list, summary: dict, reference: str) -> list[str]:
    """Each dual variant's final loss against dual's, and the share of dual's gap to the reference it closes."""
    if "dual" not in summary:
        return []
    dual = summary["dual"]["finals"]
    gap = summary["dual"]["final"][0] - summary[reference]["final"][0] if reference in summary else math.nan
    L = ["", f"## dual's variants against dual (final val loss; gap dual - {reference} = {_f(gap)})", "",
         "| arm | change | final - dual's (mean ± sd of the difference) | share of the gap closed | p (arm < dual) |",
         "|---|---|---|---|---|"]
    for a in arms:
        if a.name == "dual" or a.name not in summary or a.config.get("optim", {}).get("name") != "dual":
            continue
        f = summary[a.name]["finals"]
        delta = summary[a.name]["final"][0] - summary["dual"]["final"][0]
        sd = math.sqrt((summary[a.name]["final"][1] ** 2) / len(f) + (summary["dual"]["final"][1] ** 2) / len(dual))
        share = -delta / gap if gap and math.isfinite(gap) and gap != 0 else math.nan
        L.append(f"| {a.name} | {a.description} | {delta:+.4f} ± {sd:.4f} | {_f(share, 2)} | {_p(welch_less(f, dual)[2])} |")
    return L


def _flat(config: dict, prefix: str = "") -> dict:
    out = {}
    for k, v in config.items():
        out.update(_flat(v, f"{prefix}{k}.") if isinstance(v, dict) else {f"{prefix}{k}": v})
    return out


def config_change(child, parent) -> str:
    """What CHILD's composed run config sets differently from PARENT's, lr aside: 'key: parent's -> child's'."""
    a, b = _flat(parent.config), _flat(child.config)
    keys = sorted(k for k in a.keys() | b.keys() if a.get(k, "(none)") != b.get(k, "(none)") and k != "optim.lr")
    return "; ".join(f"{k}: {a.get(k, '(none)')} -> {b.get(k, '(none)')}" for k in keys) or "(identical config)"


def _pairs_section(arms: list, summary: dict, pairs: list, results: dict, grids: dict, chosen: dict) -> list[str]:
    """--ablation CHILD=PARENT: each arm against the arm it modifies. An arm run at one lr only (not swept) is
    compared at that lr where the parent has >= 2 seeds there (one change, nothing else); a swept arm at each
    one's chosen lr. A one-seed arm is tested against the parent's seeds as one new draw (analysis.stats.single_less)."""
    by_name = {a.name: a for a in arms}
    L = ["", "## One-change ablations (each arm against the arm it modifies)", "",
         "| arm | modifies | compared at | final - parent's (mean ± se) | seeds | p (arm < parent) | p (arm > parent) | "
         "what changes |", "|---|---|---|---|---|---|---|---|"]
    for child, parent in pairs:
        change = config_change(by_name[child], by_name[parent])
        if child not in summary or parent not in summary:
            L.append(f"| {child} | {parent} | - | not run | - | - | - | {change} |")
            continue
        c, lr = summary[child]["finals"], chosen[child]
        same = sorted(r for r in results if r[0] == parent and r[1] == lr)
        if len(grids.get(child, [])) == 1 and len(same) >= 2:
            q, where = [results[k]["final"] for k in same], f"lr {lr:.4g} (both)"
        else:
            q, where = summary[parent]["finals"], f"own best lr ({lr:.4g} vs {chosen[parent]:.4g})"
        sq = spread(q)[1]
        if len(c) == 1:
            se, p = sq * math.sqrt(1 + 1 / len(q)), single_less(c[0], q)[2]
        else:
            se, p = math.sqrt(spread(c)[1] ** 2 / len(c) + sq ** 2 / len(q)), welch_less(c, q)[2]
        L.append(f"| {child} | {parent} | {where} | {spread(c)[0] - spread(q)[0]:+.4f} ± {_f(se)} | {len(c)} vs {len(q)} | "
                 f"{_p(p)} | {_p(1 - p) if not math.isnan(p) else '-'} | {change} |")
    return L


def _readout_section(arms: list, summary: dict) -> list[str]:
    """Arms scored on a tail-EMA readout: the readout's final loss against the raw weights', paired per seed."""
    rows = []
    for a in arms:
        runs = summary.get(a.name, {}).get("runs", [])
        if runs and all(r.get("final_raw") is not None and r["final_raw"] != r["final"] for r in runs):
            diff = spread([r["final"] - r["final_raw"] for r in runs])
            raw = spread([r["final_raw"] for r in runs])
            rows.append(f"| {a.name} | {len(runs)} | {raw[0]:.4f} | {summary[a.name]['final'][0]:.4f} | "
                        f"{diff[0]:+.4f} [{diff[2]:+.4f}, {diff[3]:+.4f}] |")
    if not rows:
        return []
    return ["", "## Readout: the tail EMA against the raw weights (same runs)", "",
            "| arm | seeds | raw final (mean) | readout final (mean) | readout - raw: mean [min, max] |",
            "|---|---|---|---|---|", *rows]


def _against_section(arms: list, against: tuple[dict, dict], other: str) -> list[str]:
    """Every arm against a second reference (--also-vs): steps to its mean final loss as a ratio of its own, and
    the one-sided p-value that the arm's mean final loss is below its."""
    summary, ref = against
    L = ["", f"## Against {other}", ""]
    if other not in summary:
        return L + [f"{other} has no finished runs."]
    L += [f"Target = {other}'s mean final val loss **{ref['target']:.4f}**, reached by its seed-averaged curve at step "
          f"{ref['n_ref']:.0f}.", "", f"| arm | seeds | final (mean) | steps to {other}'s final | vs {other} | "
          f"p final < {other} |", "|---|---|---|---|---|---|"]
    for a in arms:
        v = summary.get(a.name)
        if v is not None:
            L.append(f"| {a.name} | {len(v['runs'])} | {v['final'][0]:.4f} | {_f(v['steps_to'], 0)} | "
                     f"{_f(v['ratio'], 3)} | {_p(v['p_final'])} |")
    return L


def _verdict_section(arms: list, summary: dict, ref: dict, reference: str, goal_ratio: float) -> list[str]:
    L = ["", "## Verdict against the goal", ""]
    if reference not in summary:
        return L + [f"The reference arm ({reference}) has no finished runs: no target, no verdict."]
    family = [a.name for a in arms if a.name in summary and a.config.get("optim", {}).get("name") == "dual"]
    met = [n for n in family if summary[n]["ratio"] <= goal_ratio and summary[n]["p_goal"] < GOAL_P
           and len(summary[n]["runs"]) >= GOAL_SEEDS]
    # Unreached arms have an infinite ratio: break ties by final loss, so "best" is the closest one.
    best = min(family, key=lambda n: (summary[n]["ratio"], summary[n]["final"][0]), default=None)
    L.append(f"Goal: a dual-family arm reaches {reference}'s final loss in <= {goal_ratio:.2f}x its steps, with "
             f"p goal < {GOAL_P} over >= {GOAL_SEEDS} seeds.")
    if met:
        L.append("- **met** by " + ", ".join(f"{n} ({summary[n]['ratio']:.3f}x, p={_p(summary[n]['p_goal'])})" for n in met))
    elif best is not None and not math.isfinite(summary[best]["ratio"]):
        b = summary[best]
        L.append(f"- **not met**: no dual-family arm reaches {reference}'s final loss ({ref['target']:.4f}) within "
                 f"the run; the closest is {best} at {b['final'][0]:.4f} ({len(b['runs'])} seeds).")
    elif best is not None:
        b = summary[best]
        L.append(f"- **not met**. Best dual-family ratio: {best} at {_f(b['ratio'], 3)}x {reference}'s steps "
                 f"(p goal {_p(b['p_goal'])}, {len(b['runs'])} seeds).")
    wide = {n: v.get("cross_gap", math.nan) for n, v in summary.items() if n != reference}
    wide = {n: g for n, g in wide.items() if g > WIDE_GAP * ref.get("n_ref", math.nan)}
    if wide:
        L.append("- Crossings interpolated across a validation gap wider than "
                 f"{WIDE_GAP:.0%} of {reference}'s steps: " + ", ".join(f"{n} ({g:.0f} steps)" for n, g in wide.items())
                 + ". A straight line across a convex stretch reads early; to measure these ratios, validate densely "
                 "there (train.val_tail_frac).")
    sds = {n: v["final"][1] for n, v in summary.items() if len(v["runs"]) > 1}
    if sds:
        worst = max(sds, key=sds.get)
        L.append(f"- Seed spread: the largest sample sd of a final loss is {sds[worst]:.4f} ({worst}); "
                 "differences well below it are not resolved.")
    return L


def plot(png: Path, arms: list, summary: dict, ref: dict, reference: str, device: str, goal_ratio: float) -> None:
    """Left: every arm's seed-averaged val curve (band: min-max over seeds). Right: the last 40% of steps."""
    fig, axes = plt.subplots(1, 2, figsize=(13, 5))
    colors = plt.get_cmap("tab10")
    names = [a.name for a in arms if a.name in summary]
    for i, name in enumerate(names):
        s = summary[name]
        steps = curve_steps(s["curve"])
        lo = [min(loss_at(r["curve"], st) for r in s["runs"]) for st in steps]
        hi = [max(loss_at(r["curve"], st) for r in s["runs"]) for st in steps]
        style = dict(color=colors(i % 10), ls=("-", "--", ":")[i // 10 % 3],
                     lw=2.2 if name in (reference, "dual") else 1.2)
        for ax in axes:
            n = len(s["runs"])
            ax.plot(steps, [p.val_loss for p in s["curve"].points], label=f"{name} ({n} seed{'s' * (n != 1)})", **style)
            ax.fill_between(steps, lo, hi, color=style["color"], alpha=0.15, lw=0)
    last = max(max(curve_steps(summary[n]["curve"])) for n in names)
    finals = [summary[n]["final"][0] for n in names]
    axes[1].set_xlim(0.6 * last, last)
    axes[1].set_ylim(min(finals) - 0.05, max(finals) + 0.15)
    for ax in axes:
        if math.isfinite(ref["target"]):
            ax.axhline(ref["target"], color="gray", lw=0.8, ls=":")
            ax.axvline(goal_ratio * ref["n_ref"], color="gray", lw=0.8, ls="--")
        ax.set_xlabel("step")
        ax.set_ylabel("val loss (nats/token)")
        ax.grid(alpha=0.3)
    axes[0].set_ylim(top=min(axes[0].get_ylim()[1], max(finals) + 2.0))
    axes[0].set_title(f"val loss vs step ({device.upper()}); dotted: {reference}'s final, dashed: {goal_ratio:g} N_ref (the goal)")
    axes[1].set_title("the last 40% of the steps")
    axes[1].legend(fontsize=7, ncol=2)
    fig.tight_layout()
    buf = io.BytesIO()
    fig.savefig(buf, format="png", dpi=110)
    plt.close(fig)
    with atomic_open(png, "wb") as f:
        f.write(buf.getvalue())
