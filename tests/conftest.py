from __future__ import annotations

import pytest
import torch

from vaecore.testing import binarized_mnist, synthetic_dataset, write_config, write_npz


@pytest.fixture(autouse=True)
def _single_thread():
    torch.set_num_threads(1)


@pytest.fixture(scope="session")
def tiny_data():
    return synthetic_dataset(n=256, dim=16)


@pytest.fixture(scope="session")
def mnist_small():
    return binarized_mnist(n_train=600, n_valid=200, n_test=200)


@pytest.fixture(scope="session")
def tiny_sweep_config(tmp_path_factory):
    """A config whose runs take a second or two (128 synthetic rows, 1 epoch): what a sweep grids over."""
    root = tmp_path_factory.mktemp("tiny-sweep")
    data = write_npz(synthetic_dataset(n=128, dim=16), root / "tiny.npz")
    config = {
        "data": {"name": "npz", "path": data},
        "model": {"latent_dim": 4, "encoder": {"hidden": [16]}, "decoder": {"hidden": [16]}},
        "train": {"epochs": 1, "batch_size": 32},
        "eval": {"nll_samples": 5, "probes": False},
    }
    return write_config(root / "base.toml", config)
