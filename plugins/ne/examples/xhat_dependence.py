"""Does the NE term's x_hat follow z or the data? Mean |x_hat - x| for a trained run.

For the first ``--rows`` rows of a split, x_hat is formed exactly as the plugin forms it
(``NEPlugin.reconstruct``) for every ``decoding`` and ``reconstruction``, once with the posterior
sample z ~ q(z|x) of the forward pass and once with z = 0 (the forward pass's parameters then
teacher-forced on x at z = 0). An x_hat decoded from z alone moves away from x when z carries no
information about x; one teacher-forced on x stays close to x whatever z is. Example:

    OMP_NUM_THREADS=1 python plugins/ne/examples/xhat_dependence.py runs/ne_pixelcnn --rows 100
"""

from __future__ import annotations

import argparse

import attrs
import torch
from vaecore_ne import NEPlugin, Options

from vaecore.restore import load_run


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("run")
    parser.add_argument("--rows", type=int, default=100)
    parser.add_argument("--split", default="test")
    args = parser.parse_args()
    torch.set_num_threads(1)
    loaded = load_run(args.run)
    model = loaded.model
    x = loaded.dataset.split(args.split).x[: args.rows]
    ctx = model.context(training=False)
    with torch.no_grad():
        torch.manual_seed(0)
        out = model(x, ctx)
        zero = torch.zeros_like(out.z)
        at_zero = attrs.evolve(out, z=zero, params=model.decode(zero, x))
        print(f"{args.run}: mean |x_hat - x| over {len(x)} {args.split} rows")
        print("| decoding | reconstruction | z ~ q(z\\|x) | z = 0 |")
        print("| --- | --- | ---: | ---: |")
        for decoding in ("teacher_forced_approximation", "sample", "greedy"):
            for reconstruction in ("mean", "sample"):
                plugin = NEPlugin(Options(decoding=decoding, reconstruction=reconstruction))
                errors = []
                for forward in (out, at_zero):
                    torch.manual_seed(1)
                    x_hat = plugin.reconstruct(forward, model)[0]
                    errors.append(float((x_hat - x).abs().mean()))
                print(f"| `{decoding}` | `{reconstruction}` | {errors[0]:.4f} | {errors[1]:.4f} |", flush=True)


if __name__ == "__main__":
    main()
