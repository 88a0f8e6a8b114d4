"""Harness overhead: train.py's training step vs a bare hand-written loop of the same work.

Both sides build the same model, optimizer and data stream from the same composed config. The
harness side is the trainer (`train.train`, the function `python train.py` runs), timed by its
own metrics with validation off; the bare side is the minimal loop: next batch -> forward ->
backward -> (clip) -> optimizer step. Every other step of the harness (lr schedule, loss
bookkeeping, non-finite guard, stop/checkpoint checks, a metrics event per step) is overhead.

Modes:
- `--mode inprocess` (default): both sides in this process, in alternating segments whose order
  flips every repeat (bare, harness, harness, bare, ...). One process means one allocator and one
  thread pool, which removes the process-to-process spread this kind of VM shows (~5%).
- `--mode subprocess`: `python train.py ...` against a bare child process, alternating; includes
  everything a user's process does, at the price of that spread.

The ratio is the median over repeats of (harness median step time / bare median step time).

    python -m benchmarks.overhead --data-dir ../shared/corpora/fineweb-sample/tokens --steps 30 --repeats 8
"""
from __future__ import annotations

import argparse
import json
import os
import platform
import statistics
import subprocess
import sys
import tempfile
import time
from pathlib import Path

from analysis.runs import read_run
from common.atomic_io import write_text_atomic
from common.paths import REPO


def overrides(args) -> list[str]:
    return [f"experiment={args.experiment}", f"data.dir={Path(args.data_dir).resolve()}", f"train.max_steps={args.steps}",
            "train.val_every=0", "train.log_every=1", "train.val_tokens=4096", *args.override]


def compose(args):
    """The validated Config both sides use (what train.py's Hydra app composes from the same overrides)."""
    from hydra import compose as hydra_compose
    from hydra import initialize_config_dir

    from harness.config.schema import load_config, register_configs

    register_configs()
    with initialize_config_dir(config_dir=str(REPO / "configs"), version_base="1.3"):
        return load_config(hydra_compose("config", overrides=overrides(args)))


def bare_loop(cfg) -> list[float]:
    """Per-step wall times (s) of the bare loop."""
    import torch

    from data.build import build_train_loader, prepare_data
    from model.gpt import GPT
    from optim import build_optimizer

    tc = cfg.train
    torch.manual_seed(cfg.seed)
    model = GPT(cfg.model)
    opt = build_optimizer(cfg.optim, list(model.named_parameters()), model.param_roles())
    prepare_data(cfg.data)  # synthetic shards (smoke) are generated on first use, as train.py does
    loader = build_train_loader(cfg.data, tc.seq_len, tc.micro_batch_seqs, 0, 1)
    accum = tc.global_batch_tokens // (tc.micro_batch_seqs * tc.seq_len)
    times = []
    for _ in range(tc.max_steps):
        t0 = time.perf_counter()
        for _ in range(accum):
            x, y = loader.next_batch()
            (model(x, y) / accum).backward()
        if tc.grad_clip > 0:  # part of the recipe, not of the harness
            torch.nn.utils.clip_grad_norm_(model.parameters(), tc.grad_clip)
        opt.step()
        opt.zero_grad(set_to_none=True)
        times.append(time.perf_counter() - t0)
    return times


def step_times(run_dir: Path) -> list[float]:
    """Per-step wall times (s) of a finished run, from the train_time_ms of its per-step events."""
    t = [0.0] + [e["train_time_ms"] / 1000 for e in read_run(run_dir).of("train")]
    return [b - a for a, b in zip(t, t[1:])]


def harness_inprocess(cfg, run_dir: Path) -> list[float]:
    import torch

    import train as trainer
    from harness.process import distributed as D

    run_dir.mkdir(parents=True)
    trainer.train(cfg, D.RankInfo(0, 0, 1, torch.device("cpu")), run_dir)
    return step_times(run_dir)


def harness_subprocess(args, run_dir: Path) -> list[float]:
    proc = subprocess.run([sys.executable, "train.py", *overrides(args), f"hydra.run.dir={run_dir}"],
                          cwd=REPO, capture_output=True, text=True)
    if proc.returncode:
        raise SystemExit(f"train.py failed:\n{proc.stderr[-2000:]}")
    return step_times(run_dir)


def bare_subprocess(args) -> list[float]:
    out = subprocess.run([sys.executable, "-m", "benchmarks.overhead", "--bare", *sys.argv[1:]],
                         capture_output=True, text=True, cwd=REPO, check=True).stdout
    return json.loads(out.strip().splitlines()[-1])


def measure(args, tmp: Path) -> list[tuple[float, float]]:
    """(bare, harness) median step times (s) per repeat, warm-up steps left out."""
    cfg = compose(args) if args.mode == "inprocess" else None
    pairs = []
    for r in range(args.repeats):
        run_dir = tmp / f"run{r}"
        sides = {"bare": lambda: bare_loop(cfg) if cfg is not None else bare_subprocess(args),
                 "harness": lambda: harness_inprocess(cfg, run_dir) if cfg is not None else harness_subprocess(args, run_dir)}
        order = ("bare", "harness") if r % 2 == 0 else ("harness", "bare")  # cancels slow drift
        # Medians: a step a neighbour on the machine slowed down is an outlier, not overhead.
        med = {side: statistics.median(sides[side]()[args.skip:]) for side in order}
        pairs.append((med["bare"], med["harness"]))
        print(f"repeat {r}: bare {1000 * med['bare']:.1f} ms/step, harness {1000 * med['harness']:.1f} ms/step "
              f"(ratio {med['harness'] / med['bare']:.3f})", flush=True)
    return pairs


def main() -> None:
    ap = argparse.ArgumentParser(prog="python -m benchmarks.overhead", description=__doc__,
                                 formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--experiment", default="cpu_fineweb")
    ap.add_argument("--data-dir", required=True)
    ap.add_argument("--steps", type=int, default=30)
    ap.add_argument("--skip", type=int, default=5, help="warm-up steps left out of each median")
    ap.add_argument("--repeats", type=int, default=8)
    ap.add_argument("--mode", choices=("inprocess", "subprocess"), default="inprocess")
    ap.add_argument("--out", default=str(REPO / "results" / "benchmarks" / "harness_overhead_cpu.md"))
    ap.add_argument("--bare", action="store_true", help=argparse.SUPPRESS)  # child of --mode subprocess
    ap.add_argument("override", nargs="*", help="extra Hydra overrides for both sides")
    args = ap.parse_args()
    if args.steps <= args.skip:
        raise SystemExit(f"--steps {args.steps} must exceed --skip {args.skip}")
    if args.bare:
        print(json.dumps(bare_loop(compose(args))))
        return

    import torch
    with tempfile.TemporaryDirectory() as tmp:
        pairs = measure(args, Path(tmp))
    ratios = [h / b for b, h in pairs]
    ratio = statistics.median(ratios)
    bare = [b for b, _ in pairs]
    lines = [
        "# Harness overhead (CPU)",
        "",
        f"Command: `python -m benchmarks.overhead {' '.join(sys.argv[1:])}` ({os.cpu_count()} CPUs "
        f"{platform.machine()}, torch {torch.__version__}, {torch.get_num_threads()} threads).",
        "",
        f"Mode `{args.mode}`: median step time of steps {args.skip}..{args.steps} of each segment; the order of "
        f"the two sides flips every repeat. Noise floor: the bare loop's own medians spread by "
        f"{max(bare) / min(bare) - 1:.1%} (max/min over repeats).",
        "",
        "| repeat | bare loop ms/step | train.py ms/step | ratio |",
        "|---|---|---|---|",
        *[f"| {i} | {1000 * b:.1f} | {1000 * h:.1f} | {h / b:.3f} |" for i, (b, h) in enumerate(pairs)],
        "",
        f"**Median ratio train.py / bare: {ratio:.3f}** (target <= 1.03); "
        f"range {min(ratios):.3f}..{max(ratios):.3f}.",
        "",
    ]
    Path(args.out).parent.mkdir(parents=True, exist_ok=True)
    write_text_atomic(Path(args.out), "\n".join(lines))
    print(f"median ratio {ratio:.3f} -> {args.out}")


if __name__ == "__main__":
    main()
