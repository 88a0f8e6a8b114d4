#!/usr/bin/env bash
# Moved to tools/gpu_carry.sh (README.md, 'Layout').
echo "scripts/gpu_carry.sh has moved: run \`bash tools/gpu_carry.sh $*\`" >&2
exit 2
