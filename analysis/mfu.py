"""Model FLOPs utilization of a finished run: its steady training throughput against the GPU's peak.

    python -m analysis.mfu outputs/gpu_checks/gpt2_adamw_compile [more run folders] [--peak-tflops 989]

For each run folder (config.yaml + metrics.jsonl) it rebuilds the model on the meta device (no
memory) to count the matmul parameters: every weight the forward multiplies (hidden matrices and the
LM head; embedding lookups are not matmuls). FLOPs per trained token:

    matmuls    6 N_matmul                          (forward 2, backward 4, per parameter)
    attention  12 L_attn d T / 2                   (q k^T and att v, forward + backward; a causal
                                                    query sees on average half the sequence; a
                                                    sliding window w: min(T, w) / 2 instead of T / 2)

Throughput is steady: train events after the first STEADY_STEPS steps (start-up and the first
steps' allocations left out), training time only. Peak: dense bf16 tensor-core FLOP/s of the GPU
named in the run's "run" event (H100/H200 SXM 989 TFLOP/s, A100 312), or --peak-tflops.
"""
from __future__ import annotations

import argparse
import sys
from pathlib import Path

from analysis.runs import config_tree, read_run

STEADY_STEPS = 5
PEAK_TFLOPS = {"H200": 989.4, "H100": 989.4, "A100": 312.0, "L40S": 362.0}  # dense bf16, no sparsity
MATMUL_ROLES = {"attn_q", "attn_k", "attn_v", "attn_qkv", "attn_out", "mlp_in", "mlp_out", "head", "embed_head"}


def flops_per_token(run_dir: Path) -> tuple[float, float, dict]:
    """(matmul FLOPs, attention FLOPs) per trained token, and the shapes used."""
    import torch
    from omegaconf import OmegaConf

    from model.config import ModelConfig
    from model.gpt import GPT

    config = config_tree(run_dir)  # resolved: every default filled in
    m = OmegaConf.to_object(OmegaConf.merge(OmegaConf.structured(ModelConfig), config["model"]))
    T = int(config["train"]["seq_len"])
    with torch.device("meta"):
        model = GPT(m)
    roles = model.param_roles()
    n_matmul = sum(p.numel() for n, p in model.named_parameters() if roles[n] in MATMUL_ROLES)
    context = min(T, m.window_size or T)  # the long window; short-window layers see less (upper bound)
    attn_layers = m.n_layer - len(m.no_attn_layers)
    return 6.0 * n_matmul, 12.0 * attn_layers * m.n_embd * context / 2, {"n_matmul": n_matmul, "seq_len": T,
                                                                             "context": context}


def steady_tokens_per_s(run_dir: Path) -> tuple[float, str]:
    log = read_run(run_dir)
    trains = log.of("train")
    gpu = next((e.get("hardware", {}).get("gpu", "") for e in log.of("run")), "")
    later = [e for e in trains if e["step"] > STEADY_STEPS]
    if len(later) < 2:
        raise SystemExit(f"error: {run_dir} logged too few train steps after step {STEADY_STEPS} to time")
    a, b = later[0], later[-1]
    return (b["tokens"] - a["tokens"]) / ((b["train_time_ms"] - a["train_time_ms"]) / 1000), str(gpu)


def main(argv: list[str] | None = None) -> int:
    ap = argparse.ArgumentParser(prog="python -m analysis.mfu", description=__doc__,
                                 formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("runs", nargs="+", type=Path)
    ap.add_argument("--peak-tflops", type=float, default=None, help="default: from the GPU's name")
    args = ap.parse_args(argv)
    print("| run | tokens/s (steady) | matmul params | TFLOP/s (matmul + attention) | peak | MFU |")
    print("|---|---|---|---|---|---|")
    for run in args.runs:
        mm, attn, shape = flops_per_token(run)
        tps, gpu = steady_tokens_per_s(run)
        peak = args.peak_tflops or next((v for k, v in PEAK_TFLOPS.items() if k in gpu), None)
        achieved = (mm + attn) * tps / 1e12
        mfu = f"{achieved / peak:.1%} (matmuls alone {mm * tps / 1e12 / peak:.1%})" if peak else "n/a (--peak-tflops)"
        print(f"| {run.name} | {tps:,.0f} | {shape['n_matmul'] / 1e6:.1f}M | {achieved:.3g} | "
              f"{f'{peak:.0f} ({gpu})' if peak else gpu or '?'} | {mfu} |")
    return 0


if __name__ == "__main__":
    sys.exit(main())
