"""Write the shipped binarized MNIST with its test split thinned to every 10th image (1,000 images)
as an .npz that ``data.name = "npz"`` reads, so that ``vaecore eval`` can afford K = 5000 on a test
subset that is not biased: the shipped test file is not in random order (the first 1,000 images
have 133 pixels on on average, the next 1,000 have 60, the whole split 103.9, every 10th 104.1).

    python plugins/renyi/examples/make_test_subset.py /tmp/bmnist_test_every10.npz
"""

import sys

import numpy as np

from vaecore.data.loaders import load_binarized_mnist

out = sys.argv[1] if len(sys.argv) > 1 else "bmnist_test_every10.npz"
ds = load_binarized_mnist()
np.savez_compressed(
    out,
    x_train=ds.train.x[:100].numpy().astype(np.uint8),  # only the input shape matters to eval
    x_valid=ds.valid.x[:100].numpy().astype(np.uint8),
    x_test=ds.test.x[::10].numpy().astype(np.uint8),
)
print(f"wrote {out}: {len(ds.test.x[::10])} test images (every 10th)")
