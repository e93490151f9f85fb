#!/usr/bin/env bash
# The NE-VAE (table 1 shape) and DU-VAE (table 1, Omniglot columns, in shape) reproductions at CPU
# scale, in the MLP setting of mlp_reproduce.toml, 3 seeds each: VAE, aggressive training, NE se,
# NE lp (c = 0), BN-VAE, DU-VAE, IAF, DU-IAF (one sweep over `plugins`) and the beta-VAE
# (beta = 0.9, a sweep over train.beta). Needs the ne, du and baselines plugins installed.
#   bash benchmarks/collapse_testbed/reproduce_mlp.sh [OUT]        (OUT default: sweeps/collapse_mlp)
# Rerun the same command to continue an interrupted sweep; then regenerate the README tables with
#   cp OUT/methods/results.csv benchmarks/collapse_testbed/results/mlp_methods.csv
#   cp OUT/beta/results.csv benchmarks/collapse_testbed/results/mlp_beta.csv
#   python docs/gen_tables.py
set -euo pipefail
config="$(cd "$(dirname "$0")" && pwd)/mlp_reproduce.toml"
out="${1:-sweeps/collapse_mlp}"
rows='[],[{name = "aggressive"}]'
rows="$rows"',[{name = "ne", variant = "se"}],[{name = "ne", variant = "lp", cap = 0.0}]'
rows="$rows"',[{name = "du", gamma = 0.5, drop = 0.0, floor = 0.0, scale = "fixed"}]'
rows="$rows"',[{name = "du", gamma = 0.5, drop = 0.1}],[{name = "iaf", depth = 2, width = 2}]'
rows="$rows"',[{name = "du", gamma = 0.5, drop = 0.15}, {name = "iaf", depth = 2, width = 2}]'
vaecore sweep "$config" --grid "plugins=$rows" --seeds 0,1,2 --jobs 2 --out "$out/methods"
vaecore sweep "$config" --grid "train.beta=0.9" --seeds 0,1,2 --jobs 2 --out "$out/beta"
