#!/usr/bin/env bash
# The Rényi reproduction: 3 methods (alpha = 1, 0, -inf) x 3 seeds at K = 5, one sweep.
#   bash plugins/renyi/reproduce/run.sh [OUT]        (OUT default: sweeps/renyi_k5)
# Rerun the same command to continue an interrupted sweep; then regenerate the README table with
#   cp OUT/results.csv plugins/renyi/reproduce/results/k5.csv && python docs/gen_tables.py
set -euo pipefail
here="$(cd "$(dirname "$0")" && pwd)"
out="${1:-sweeps/renyi_k5}"
vaecore sweep "$here/k5.toml" --grid "plugins.0.alpha=1.0,0.0,-inf" --seeds 0,1,2 --out "$out"
