#!/usr/bin/env bash
# The InteL reproduction at CPU scale: the hole experiment (section 6.1, fig. 4) and the
# Fashion-MNIST sparsity against gamma (section 6.3, fig. 7), 3 seeds each.
#   bash plugins/intel/reproduce/run.sh [OUT]        (OUT default: sweeps/intel)
# Fashion-MNIST is read from $VAECORE_DATA (the folder holding fashion_mnist.npz). Finished runs
# are reused when rerun (their config checked); then the README tables are regenerated with
#   cp OUT/holes/results.csv plugins/intel/reproduce/results/holes.csv
#   cp OUT/fashion/results.csv plugins/intel/reproduce/results/fashion.csv
#   python docs/gen_tables.py
set -euo pipefail
examples="$(cd "$(dirname "$0")/../examples" && pwd)"
out="${1:-sweeps/intel}"
python "$examples/hole_experiment.py" --out "$out/holes" --seeds 0 1 2
python "$examples/fashion_sparsity.py" --out "$out/fashion" --gammas 0 10 100 --seeds 0 1 2
