"""Harness overhead: train.py's training step vs a bare hand-written loop of the same work.

Both sides build the same model, optimizer and data stream from the same composed
config and run as separate processes (same threads, same allocator state). The
harness side is `train.py` itself, timed by its own metrics (validation off); the
bare side is the minimal loop: next batch -> forward -> backward -> step.
Runs alternate (bare, harness, bare, harness, ...) so machine noise hits both.

    python scripts/bench_overhead.py --data-dir ../shared/corpora/fineweb-sample/tokens --steps 60 --repeats 3
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

REPO = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(REPO))
from harness.atomic_io import write_text_atomic  # noqa: E402


def overrides(args) -> list[str]:
    return [f"experiment={args.experiment}", f"data.dir={args.data_dir}", f"train.max_steps={args.steps}",
            "train.val_every=0", "train.log_every=1", "train.val_tokens=4096", *args.override]


def torch_version() -> str:
    import torch
    return torch.__version__


def bare_loop(args) -> list[float]:
    """Per-step wall times (s) of the bare loop, built from the same config as train.py."""
    import torch
    from hydra import compose, initialize_config_dir

    from data.build import build_train_loader, prepare_data
    from harness.config import load_config, register_configs
    from model.gpt import GPT
    from optim import build_optimizer

    register_configs()
    with initialize_config_dir(config_dir=str(REPO / "configs"), version_base="1.3"):
        cfg = load_config(compose("config", overrides=overrides(args)))
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


def harness_steps(args, run_dir: Path) -> list[float]:
    """Per-step wall times (s) of train.py, from the train_time_ms of its per-step events."""
    proc = subprocess.run([sys.executable, "train.py", *overrides(args), f"hydra.run.dir={run_dir}"],
                          cwd=REPO, capture_output=True, text=True)
    if proc.returncode:
        raise SystemExit(f"train.py failed:\n{proc.stderr[-2000:]}")
    events = [json.loads(line) for line in (run_dir / "metrics.jsonl").read_text().splitlines()]
    t = [0.0] + [e["train_time_ms"] / 1000 for e in events if e["event"] == "train"]
    return [b - a for a, b in zip(t, t[1:])]


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--experiment", default="cpu_fineweb")
    ap.add_argument("--data-dir", required=True)
    ap.add_argument("--steps", type=int, default=60)
    ap.add_argument("--skip", type=int, default=10, help="warm-up steps left out of the mean")
    ap.add_argument("--repeats", type=int, default=3)
    ap.add_argument("--out", default=str(REPO / "results" / "benchmarks" / "harness_overhead_cpu.md"))
    ap.add_argument("--bare", action="store_true", help=argparse.SUPPRESS)  # child mode
    ap.add_argument("override", nargs="*", help="extra Hydra overrides for both sides")
    args = ap.parse_args()
    if args.bare:
        print(json.dumps(bare_loop(args)))
        return

    bare_means, harness_means = [], []
    with tempfile.TemporaryDirectory() as tmp:
        for r in range(args.repeats):
            out = subprocess.run([sys.executable, __file__, "--bare", *sys.argv[1:]], capture_output=True, text=True,
                                 cwd=REPO, check=True).stdout
            bare = json.loads(out.strip().splitlines()[-1])[args.skip:]
            ours = harness_steps(args, Path(tmp) / f"run{r}")[args.skip:]
            # Medians: a step that a neighbour on the machine slowed down is an outlier, not overhead.
            bare_means.append(statistics.median(bare))
            harness_means.append(statistics.median(ours))
            print(f"repeat {r}: bare {1000 * bare_means[-1]:.1f} ms/step, harness {1000 * harness_means[-1]:.1f} ms/step",
                  flush=True)
    ratio = statistics.median(h / b for h, b in zip(harness_means, bare_means))
    noise = max(bare_means) / min(bare_means) - 1
    lines = [
        "# Harness overhead (CPU)",
        "",
        f"Command: `python scripts/bench_overhead.py {' '.join(sys.argv[1:])}` on {platform.node() or 'this machine'} "
        f"({os.cpu_count()} CPUs, torch {torch_version()}).",
        "",
        f"Median step time over steps {args.skip}..{args.steps} (warm-up excluded); bare and harness runs alternate. "
        f"Run-to-run noise: the bare loop alone varies by {noise:.1%} (max/min of its repeats).",
        "",
        "| repeat | bare loop ms/step (median) | train.py ms/step (median) | ratio |",
        "|---|---|---|---|",
        *[f"| {i} | {1000 * b:.1f} | {1000 * h:.1f} | {h / b:.3f} |"
          for i, (b, h) in enumerate(zip(bare_means, harness_means))],
        "",
        f"**Median ratio train.py / bare: {ratio:.3f}** (target <= 1.03).",
        "",
    ]
    Path(args.out).parent.mkdir(parents=True, exist_ok=True)
    write_text_atomic(Path(args.out), "\n".join(lines))
    print(f"median ratio {ratio:.3f} -> {args.out}")


if __name__ == "__main__":
    main()
