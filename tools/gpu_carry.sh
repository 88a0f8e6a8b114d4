#!/usr/bin/env bash
# Fill a git-ignored folder with what tools/gpu_checks.sh needs on a bare GPU machine (torch, no
# network, no hydra/omegaconf/wandb, no ../shared): wheels for hydra-core and omegaconf and their
# pure-Python dependencies (PyYAML for CPython 3.10-3.13), the FineWeb sample shards, and the two
# record scripts it runs side by side (MIT, verbatim; they stay in the ignored folder, never in git).
#
#   bash tools/gpu_carry.sh [.carry]        # here (package registry reachable), ~8 MB
#   then on the GPU machine, carrying it:     bash tools/gpu_checks.sh .carry "$OUT"
set -euo pipefail
CARRY=${1:-.carry}
SHARED=${SHARED:-../shared}
PY=${PY:-.venv/bin/python}
mkdir -p "$CARRY/wheels" "$CARRY/fineweb-sample" "$CARRY/reference"

$PY -m pip download --quiet --no-deps --only-binary=:all: -d "$CARRY/wheels" \
    hydra-core==1.3.2 omegaconf==2.3.0 packaging
# antlr4-python3-runtime 4.9.3 (hydra's parser) is published as a source archive only: build its wheel here.
$PY -m pip wheel --quiet --no-deps -w "$CARRY/wheels" antlr4-python3-runtime==4.9.3
for v in 3.10 3.11 3.12 3.13; do
    $PY -m pip download --quiet --no-deps --only-binary=:all: --python-version "$v" \
        --platform manylinux2014_x86_64 --platform manylinux_2_17_x86_64 -d "$CARRY/wheels" PyYAML==6.0.2
done

cp "$SHARED"/corpora/fineweb-sample/tokens/fineweb_*.bin "$CARRY/fineweb-sample/"
cp "$SHARED"/reference/modded-nanogpt/record12_flexattn.py "$SHARED"/reference/modded-nanogpt/record20_sub3min.py \
    "$SHARED"/reference/modded-nanogpt/LICENSE "$CARRY/reference/"
ls "$CARRY"/wheels
du -sh "$CARRY"
