#!/usr/bin/env bash
# The NE-VAE (table 1 shape) and DU-VAE (table 1, Omniglot columns, in shape) reproductions at CPU
# scale, 3 seeds each, in one of two settings: `mlp` (reproduce_mlp.toml, MLP encoder and decoder)
# or `pixelcnn` (reproduce_pixelcnn.toml, ResNet encoder and PixelCNN decoder, the papers' kind of
# setting). VAE, NE se, NE lp (c = 0), BN-VAE, DU-VAE, IAF, DU-IAF and aggressive training (one
# sweep over `plugins`, aggressive last: the slowest) and the beta-VAE (beta = 0.9, a sweep over
# train.beta). Needs the ne, du and baselines plugins installed.
#   bash benchmarks/collapse_testbed/reproduce.sh mlp|pixelcnn [OUT]   (OUT default: sweeps/collapse_SETTING)
# Rerun the same command to continue an interrupted sweep; then regenerate the README tables with
#   cp OUT/methods/results.csv benchmarks/collapse_testbed/results/SETTING_methods.csv
#   cp OUT/beta/results.csv benchmarks/collapse_testbed/results/SETTING_beta.csv
#   python docs/gen_tables.py
set -euo pipefail
setting="${1:?usage: reproduce.sh mlp|pixelcnn [OUT]}"
config="$(cd "$(dirname "$0")" && pwd)/reproduce_$setting.toml"
[[ -f "$config" ]] || { echo "reproduce.sh: no setting '$setting' (mlp or pixelcnn)" >&2; exit 2; }
out="${2:-sweeps/collapse_$setting}"
rows='[],[{name = "ne", variant = "se"}],[{name = "ne", variant = "lp", cap = 0.0}]'
rows="$rows"',[{name = "du", gamma = 0.5, drop = 0.0, floor = 0.0, scale = "fixed"}]'
rows="$rows"',[{name = "du", gamma = 0.5, drop = 0.1}],[{name = "iaf", depth = 2, width = 2}]'
rows="$rows"',[{name = "du", gamma = 0.5, drop = 0.15}, {name = "iaf", depth = 2, width = 2}]'
rows="$rows"',[{name = "aggressive"}]'
vaecore sweep "$config" --grid "plugins=$rows" --seeds 0,1,2 --jobs 2 --out "$out/methods"
vaecore sweep "$config" --grid "train.beta=0.9" --seeds 0,1,2 --jobs 2 --out "$out/beta"
