#!/usr/bin/env bash
# The text-VAE reproduction on the KJV verses: LSTM-VAE with KL warm-up, DU-VAE and aggressive
# training x 3 seeds, one sweep (2 runs at a time, one thread each):
#   bash plugins/text/reproduce/run.sh KJV_FILE [OUT]     (OUT default: sweeps/text_kjv)
# KJV_FILE is kjv_verses.tsv.gz. Rerun the same command to continue an interrupted sweep; then
# regenerate the README table with
#   cp OUT/results.csv plugins/text/reproduce/results/kjv.csv && python docs/gen_tables.py
set -euo pipefail
here="$(cd "$(dirname "$0")" && pwd)"
data="$(cd "$(dirname "${1:?usage: run.sh KJV_FILE [OUT]}")" && pwd)/$(basename "$1")"
out="${2:-sweeps/text_kjv}"
rows='[{name = "text"}]'
rows="$rows,[{name = \"text\"}, {name = \"du\", gamma = 0.5, drop = 0.2}]"
rows="$rows,[{name = \"text\"}, {name = \"aggressive\", max_inner = 5, window = 5}]"
vaecore sweep "$here/kjv.toml" --set "data.path=$data" --grid "plugins=$rows" --seeds 0,1,2 --jobs 2 --out "$out"
