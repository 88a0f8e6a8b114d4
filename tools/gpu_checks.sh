#!/usr/bin/env bash
# The standing GPU check: one call of at most ~10 minutes on one GPU (sized for an H200, torch 2.11),
# in order of value. Each step has a time limit and the call a budget (BUDGET seconds): a slow step
# costs only the steps after it, and every step's outputs are kept as they are written.
#   1. tied_dual    GPT-2 124M (tied embedding/head) with optim=dual, compiled, 30 steps: the check owed
#                   since the last GPU run (results/benchmarks/gpu_h200.md: dual diverged with a flat 0.05
#                   rate on the tied table; it is now tied_embed_lr_times_width / n_embd). Same settings as
#                   that run's compiled AdamW (val 7.562 after 30 steps), so the two compare directly.
#   2. record46     experiment=record46_batchsizeschedule on one GPU (accumulation 8), compiled, the first 20 of its
#                   2160 steps (issue 25): ms/step, the attention backend auto chose (the run event's
#                   attention_backend: fa3 only where flash_attn_interface is installed, else flex) and the FP8
#                   head; validation on 8 rows of 49,152 tokens. (The record's own script needs FA3 from the
#                   `kernels` hub: no side-by-side here.)
#   3. vs_record12  benchmarks/vs_reference/run.py: record 12's own script vs experiment=record12_flexattn, one
#                   GPU, compiled, 40 steps of the unchanged 1875-step schedule (step-time ratio, compile
#                   time, val loss at steps 0 and 40) -> OUT/vs_reference/record12/report.md
#   4. vs_record20  the same for record 20, 30 of its 1393 steps -> OUT/vs_reference/record20/report.md
#   5. mfu          GPT-2 124M, AdamW, compiled, 20 steps, if time is left; analysis/mfu.py on it and on
#                   the runs above (the tied-dual run is GPT-2 124M compiled too, its optimizer included).
#   6. track3_muon  experiment=track3_muon as configured (one GPU: accumulation 8), compiled, the first 20
#                   of its 3250 steps (train.stop_after_step), 262,144 val tokens: its ms/step and MFU,
#                   owed since track 3 landed (issue 12); the first CPU proxy's (_v1) figures are in
#                   results/benchmarks/track3_proxy_cpu.md.
#   7. track3_best46  experiment=track3_best46 the same way, right after step 6 on the same GPU (issue 24:
#                   its ms/step against track3_muon's; SOAP's eigh at step 0 and its per-step QR are the
#                   cost): the first 20 of its 2900 steps -> both in mfu.md.
# The sample's 3.96M train tokens are repeated to 40M (tools/repeat_shards.py): record 20's loader
# does not cycle. Its val shard holds 405,727 tokens, so validation uses 393,216 (6 x 65,536) in 3-4.
#
#   bash tools/gpu_carry.sh .carry                    # here, once (wheels, sample shards, 2 record scripts)
#   bash tools/gpu_checks.sh .carry "$OUT"            # on the GPU machine, with .carry carried along
#   DRY_RUN=1 bash tools/gpu_checks.sh .carry /tmp/o  # on CPU: composes every config (tools/describe.py),
#                                                       # prepares both side-by-sides (--dry-run), runs mfu.py
#                                                       # on a short CPU run; nothing needs a GPU
# OUT receives gpu.txt (machine, each step's status and wall time), mfu.md, vs_reference/record*/ and
# runs.tgz (metrics.jsonl, config.yaml and logs of every run). Run folders go under $RUNS.
set -u
CARRY=${1:?usage: tools/gpu_checks.sh CARRY_DIR OUT_DIR}
OUT=${2:?usage: tools/gpu_checks.sh CARRY_DIR OUT_DIR}
BUDGET=${BUDGET:-570}
DRY=${DRY_RUN:-0}
RUNS=${RUNS:-outputs/gpu_checks}
PY=${PY:-python3}
DATA="$RUNS/data"
export PYTHONUNBUFFERED=1
mkdir -p "$OUT" "$RUNS"
START=$SECONDS

step() {  # step NAME SECONDS CMD...: run with min(SECONDS, what is left of BUDGET); record status and wall time
    local name=$1 limit=$2; shift 2
    local left=$((BUDGET - (SECONDS - START)))
    if [ "$left" -lt 40 ]; then
        echo "=== $name skipped: ${left}s of the budget left" | tee -a "$OUT/gpu.txt"
        return
    fi
    [ "$limit" -gt "$left" ] && limit=$left
    local t0=$SECONDS
    echo "=== $name (limit ${limit}s): $*"
    STEP_LIMIT=$limit timeout --kill-after=15 "$limit" bash -c '"$@"' _ "$@"  # bash -c: steps may be functions
    local rc=$?
    echo "=== $name rc=$rc wall=$((SECONDS - t0))s" | tee -a "$OUT/gpu.txt"
    pack
}

pack() {  # what the summary needs, refreshed after every step: each run's metrics, config and logs
    (cd "$RUNS" && find . \( -name metrics.jsonl -o -name config.yaml -o -name '*.log' \) -print0 |
        tar --null -czf "$OUT/runs.tgz.part" -T - && mv "$OUT/runs.tgz.part" "$OUT/runs.tgz")
}

train() {  # train.py OVERRIDES...; in a dry run, compose the same config and print what it builds
    if [ "$DRY" = 1 ]; then $PY -m tools.describe "$@"; else $PY train.py "$@"; fi
}

side_by_side() {  # side_by_side RECORD EXPERIMENT STEPS: vs_reference.py, both runs within this step's limit
    local per_run=$(((STEP_LIMIT - 25) / 2))  # two runs, then the report
    $PY -m benchmarks.vs_reference.run --reference "$CARRY/reference/$1.py" --experiment "$2" --data "$DATA" \
        --steps "$3" --gpus 1 --val-tokens 393216 --timeout "$per_run" --python "$PY" \
        --out "$OUT/vs_reference/${1%%_*}" $([ "$DRY" = 1 ] && echo --dry-run)
}

export -f train side_by_side
export DRY PY CARRY DATA OUT
{ nvidia-smi --query-gpu=name,memory.total,driver_version,clocks.max.sm --format=csv 2>/dev/null || echo "no nvidia-smi"
  $PY -c "import torch; print('torch', torch.__version__, 'cuda', torch.version.cuda, torch.cuda.is_available() and torch.cuda.get_device_name(0))"
  nproc; } > "$OUT/gpu.txt" 2>&1

if ! $PY -c "import hydra, omegaconf" 2>/dev/null; then  # the GPU machine has torch only
    $PY -m pip install --quiet --no-index --find-links "$CARRY/wheels" hydra-core omegaconf >> "$OUT/gpu.txt" 2>&1 ||
        $PY -m pip install --quiet --user --no-index --find-links "$CARRY/wheels" hydra-core omegaconf >> "$OUT/gpu.txt" 2>&1
fi
$PY -m tools.repeat_shards --src "$CARRY/fineweb-sample" --out "$DATA" --train-tokens 40000000 | tee -a "$OUT/gpu.txt"

GPT2=(model=gpt2_124m "data.dir=$DATA" device=cuda train.val_every=0 train.val_tokens=262144 train.log_every=5
      train.compile=true)
step tied_dual 130 train "${GPT2[@]}" optim=dual train.max_steps=30 "hydra.run.dir=$RUNS/gpt2_dual_compile"
step record46 150 train experiment=record46_batchsizeschedule "data.dir=$DATA" device=cuda train.compile=true \
    train.stop_after_step=20 train.val_tokens=393216 data.varlen.val_rank_tokens=49152 train.log_every=5 \
    "hydra.run.dir=$RUNS/record46_compile"
step vs_record12 250 side_by_side record12_flexattn record12_flexattn 40
step vs_record20 200 side_by_side record20_sub3min record20_sub3min 30
step mfu_run 90 train "${GPT2[@]}" optim=adamw train.max_steps=20 train.log_every=1 "hydra.run.dir=$RUNS/gpt2_adamw_compile"
step track3_muon 150 train experiment=track3_muon "data.dir=$DATA" device=cuda train.compile=true train.stop_after_step=20 \
    train.val_tokens=262144 train.log_every=5 "hydra.run.dir=$RUNS/track3_muon_compile"
step track3_best46 170 train experiment=track3_best46 "data.dir=$DATA" device=cuda train.compile=true \
    train.stop_after_step=20 train.val_tokens=262144 train.log_every=5 "hydra.run.dir=$RUNS/track3_best46_compile"
if [ "$DRY" = 1 ]; then  # nothing above trained: time a short CPU run instead, to exercise mfu.py
    $PY train.py experiment=smoke train.max_steps=12 train.log_every=1 "hydra.run.dir=$RUNS/gpt2_adamw_compile" > /dev/null
    MFU_ARGS=(--peak-tflops 1)
else
    MFU_ARGS=()
fi
MFU_RUNS=$(ls -d "$RUNS"/gpt2_adamw_compile "$RUNS"/gpt2_dual_compile "$RUNS"/track3_muon_compile "$RUNS"/track3_best46_compile \
           "$RUNS"/record46_compile \
           "$OUT"/vs_reference/*/ours 2>/dev/null |
           while read -r d; do [ -s "$d/metrics.jsonl" ] && echo "$d"; done)
# shellcheck disable=SC2086  # one run folder per word
$PY -m analysis.mfu $MFU_RUNS "${MFU_ARGS[@]}" 2>&1 | tee "$OUT/mfu.md"
echo "=== total wall $((SECONDS - START))s of a ${BUDGET}s budget" | tee -a "$OUT/gpu.txt"
ls -la "$OUT"
