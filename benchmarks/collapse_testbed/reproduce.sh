#!/usr/bin/env bash
# The NE-VAE (table 1 shape) and DU-VAE (table 1, Omniglot columns, in shape) reproductions at CPU
# scale, 3 seeds each, in one of two settings: `mlp` (reproduce_mlp.toml, MLP encoder and decoder)
# or `pixelcnn` (reproduce_pixelcnn.toml, ResNet encoder and PixelCNN decoder, the papers' kind of
# setting). Four sweeps, cheapest first: `beta` (the beta-VAE, beta = 0.9, a sweep over
# train.beta), `methods` (a sweep over `plugins`: VAE, BN-VAE, DU-VAE, IAF, DU-IAF), `ne` (NE se
# and NE lp, c = 0: with a PixelCNN each step decodes x_hat pixel by pixel, about 3 times a VAE
# step) and `aggressive` (aggressive training: 30 to 100 encoder updates per decoder update while
# aggressive). Needs the ne, du and baselines plugins installed.
#   bash benchmarks/collapse_testbed/reproduce.sh mlp|pixelcnn [OUT]   (OUT default: sweeps/collapse_SETTING)
# Rerun the same command to continue an interrupted sweep; then regenerate the README tables with
#   for s in beta methods ne aggressive; do cp OUT/$s/results.csv benchmarks/collapse_testbed/results/SETTING_$s.csv; done
#   python docs/gen_tables.py
set -euo pipefail
setting="${1:?usage: reproduce.sh mlp|pixelcnn [OUT]}"
config="$(cd "$(dirname "$0")" && pwd)/reproduce_$setting.toml"
[[ -f "$config" ]] || { echo "reproduce.sh: no setting '$setting' (mlp or pixelcnn)" >&2; exit 2; }
out="${2:-sweeps/collapse_$setting}"
rows='[],[{name = "du", gamma = 0.5, drop = 0.0, floor = 0.0, scale = "fixed"}]'
rows="$rows"',[{name = "du", gamma = 0.5, drop = 0.1}],[{name = "iaf", depth = 2, width = 2}]'
rows="$rows"',[{name = "du", gamma = 0.5, drop = 0.15}, {name = "iaf", depth = 2, width = 2}]'
ne='[{name = "ne", variant = "se"}],[{name = "ne", variant = "lp", cap = 0.0}]'
vaecore sweep "$config" --grid "train.beta=0.9" --seeds 0,1,2 --jobs 2 --out "$out/beta"
vaecore sweep "$config" --grid "plugins=$rows" --seeds 0,1,2 --jobs 2 --out "$out/methods"
vaecore sweep "$config" --grid "plugins=$ne" --seeds 0,1,2 --jobs 2 --out "$out/ne"
vaecore sweep "$config" --grid 'plugins=[{name = "aggressive"}]' --seeds 0,1,2 --jobs 2 --out "$out/aggressive"
