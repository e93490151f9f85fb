#!/usr/bin/env bash
# The VAE-AS reproduction (table 2 shape): the VAE and 4 alpha/beta rows x 3 seeds, one sweep.
#   bash plugins/as/reproduce/run.sh [OUT]        (OUT default: sweeps/as_table2)
# Rerun the same command to continue an interrupted sweep; then regenerate the README table with
#   cp OUT/results.csv plugins/as/reproduce/results/table2.csv && python docs/gen_tables.py
set -euo pipefail
here="$(cd "$(dirname "$0")" && pwd)"
out="${1:-sweeps/as_table2}"
rows='[]'
for ab in "1.0 1.0" "1.0 0.2" "1.0 5.0" "10.0 1.0"; do
    set -- $ab
    rows="$rows,[{name = \"as\", alpha = $1, beta = $2}]"
done
vaecore sweep "$here/table2.toml" --grid "plugins=$rows" --seeds 0,1,2 --out "$out"
