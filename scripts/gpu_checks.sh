#!/usr/bin/env bash
# Moved to tools/gpu_checks.sh (README.md, 'Layout').
echo "scripts/gpu_checks.sh has moved: run \`bash tools/gpu_checks.sh $*\`" >&2
exit 2
