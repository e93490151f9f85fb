#!/usr/bin/env bash
# The Rényi reproductions, one sweep each:
#   k5:  3 methods (alpha = 1, 0, -inf) x 3 seeds at K = 5 (Burda et al. table 1 shape);
#   pca: alpha in {1, 0.5, 0, -1, -inf} x 3 seeds, the PCA components of the posterior means
#        (the geometry paper's section 2.1).
#   bash plugins/renyi/reproduce/run.sh [OUT] [k5|pca ...]   (OUT default: sweeps/renyi; both studies)
# Rerun the same command to continue an interrupted sweep; then regenerate the README tables with
#   cp OUT/k5/results.csv plugins/renyi/reproduce/results/k5.csv
#   cp OUT/pca/results.csv plugins/renyi/reproduce/results/pca.csv && python docs/gen_tables.py
set -euo pipefail
here="$(cd "$(dirname "$0")" && pwd)"
out="${1:-sweeps/renyi}"
shift || true
studies=("$@")
[ ${#studies[@]} -gt 0 ] || studies=(k5 pca)
for study in "${studies[@]}"; do
    case "$study" in
        k5) vaecore sweep "$here/k5.toml" --grid "plugins.0.alpha=1.0,0.0,-inf" --seeds 0,1,2 --out "$out/k5" ;;
        pca) vaecore sweep "$here/pca.toml" --grid "plugins.0.alpha=1.0,0.5,0.0,-1.0,-inf" --seeds 0,1,2 --jobs 2 --out "$out/pca" ;;
        *) echo "run.sh: unknown study '$study' (k5 or pca)" >&2; exit 2 ;;
    esac
done
