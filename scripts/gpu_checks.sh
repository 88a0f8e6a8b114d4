#!/usr/bin/env bash
# The GPU checks of the trainer and the optimizer on one CUDA device, in priority order, each under
# its own time limit so one failure never costs the rest:
#   1. Newton-Schulz micro-benchmark in bf16 (scripts/bench_ns.py --device cuda)
#   2. experiment=cpu_fineweb on CUDA (bf16 autocast), 200 steps
#   3. model=gpt2_124m, optim=adamw, 50 steps (one GPU: 8 micro-batches of 64 x 1024 per step)
#   4. model=gpt2_124m, optim=dual, 30 steps (step time against 3.)
#   5. the optimizer benchmark (scripts/bench_optim.py) on the GPU, 4 runs sharing it
#   6. model=gpt2_124m, optim=adamw, train.compile=true, 30 steps (compile time is not timed)
#
#   scripts/gpu_checks.sh DATA_DIR OUT_DIR      # DATA_DIR: FineWeb shards (train + val)
#
# OUT_DIR receives the reports (ns_gpu.md, optim_gpu.md/.png), gpu.txt and runs.tgz (metrics.jsonl,
# config.yaml and console log of every run); run folders go under $RUNS (default outputs/gpu_checks).
# results/benchmarks/gpu_h200.md is the write-up of one such call.
set -u
DATA=${1:?usage: scripts/gpu_checks.sh DATA_DIR OUT_DIR}
OUT=${2:?usage: scripts/gpu_checks.sh DATA_DIR OUT_DIR}
RUNS=${RUNS:-outputs/gpu_checks}
PY=${PY:-python3}
export PYTHONUNBUFFERED=1
mkdir -p "$OUT" "$RUNS"

step() {  # step NAME SECONDS CMD...: run with a limit, record its status and wall time
    local name=$1 limit=$2; shift 2
    local t0=$SECONDS
    echo "=== $name (limit ${limit}s): $*"
    timeout "$limit" "$@"
    local rc=$?
    echo "=== $name rc=$rc wall=$((SECONDS - t0))s" | tee -a "$OUT/gpu.txt"
    pack
}

pack() {  # what the summary needs, refreshed after every step: each run's metrics, config and logs
    (cd "$RUNS" && find . \( -name metrics.jsonl -o -name config.yaml -o -name '*.log' \) -print0 |
        tar --null -czf "$OUT/runs.tgz.part" -T - && mv "$OUT/runs.tgz.part" "$OUT/runs.tgz")
}

{ nvidia-smi --query-gpu=name,memory.total,driver_version,clocks.max.sm --format=csv
  $PY -c "import torch; print('torch', torch.__version__, 'cuda', torch.version.cuda, torch.cuda.get_device_name(0))"
  nproc; } > "$OUT/gpu.txt" 2>&1

GPT2=(model=gpt2_124m "data.dir=$DATA" device=cuda train.val_every=0 train.val_tokens=262144 train.log_every=5)
step ns_bf16 90 $PY scripts/bench_ns.py --device cuda --reps 10 --out "$OUT/ns_gpu.md"
step cpu_fineweb_cuda 120 $PY train.py experiment=cpu_fineweb "data.dir=$DATA" device=cuda train.max_steps=200 \
    "hydra.run.dir=$RUNS/cpu_fineweb_cuda"
step gpt2_adamw 180 $PY train.py "${GPT2[@]}" optim=adamw train.max_steps=50 "hydra.run.dir=$RUNS/gpt2_adamw"
step gpt2_dual 150 $PY train.py "${GPT2[@]}" optim=dual train.max_steps=30 "hydra.run.dir=$RUNS/gpt2_dual"
step bench_optim 240 $PY scripts/bench_optim.py --device cuda --data "$DATA" --jobs 4 --threads 2 --val-tokens 8192 \
    --lrs adamw=2.5e-4,5e-4,1e-3,2e-3,4e-3 muon=0.00375,0.0075,0.015,0.03 dual=0.0075,0.015,0.03,0.06 \
    --out-runs "$RUNS/bench_optim" --report "$OUT/optim_gpu.md"
step gpt2_adamw_compile 180 $PY train.py "${GPT2[@]}" optim=adamw train.max_steps=30 train.compile=true \
    "hydra.run.dir=$RUNS/gpt2_adamw_compile"
ls -la "$OUT"
