"""The components vaecore ships, registered through the same ``components`` hook as a plugin's."""

from __future__ import annotations

import functools

from vaecore.components import BUILTIN, Component, ComponentRegistry, plugin_components
from vaecore.data import loaders
from vaecore.data.external import ImageFolderOptions, load_image_folder, load_npy_folder
from vaecore.data.synthetic import SYNTHETIC
from vaecore.hookspecs import HOOK_API_VERSION, hookimpl
from vaecore.likelihoods import Bernoulli, Gaussian, Laplace
from vaecore.loggers import CSVLogger, MLflowLogger, TensorBoardLogger, WandbLogger
from vaecore.networks import (
    ConvDecoder,
    ConvEncoder,
    Decoder,
    Encoder,
    PixelCNNDecoder,
    ResNetEncoder,
)


class BuiltinComponents:
    """The built-in encoders, decoders, likelihoods and datasets, as a plugin would register them."""

    api_version = HOOK_API_VERSION

    @staticmethod
    @hookimpl
    def components() -> list[Component]:
        datasets = {
            "binarized_mnist": (loaders.shipped, "statically binarized MNIST, shipped with vaecore (50k/10k/10k)"),
            "mnist": (loaders.from_root("mnist.npz"), "MNIST from the data folder (mnist.npz), or downloaded"),
            "fashion_mnist": (
                loaders.from_root("fashion_mnist.npz"),
                "Fashion-MNIST from the data folder (fashion_mnist.npz), or downloaded",
            ),
            "omniglot": (loaders.omniglot, "Omniglot 28x28 (Burda et al.'s chardata.mat in the data folder)"),
            "npz": (loaders.from_path, "any .npz file of x_train, x_test, optional x_valid and y_* (data.path)"),
            **{name: (loaders.synthetic(name), f"the synthetic 2-D set {name!r}") for name in SYNTHETIC},
        }
        return [
            Component("encoder", "mlp", Encoder, doc="fully connected layers (hidden, activation)"),
            Component(
                "encoder", "conv", ConvEncoder, doc="InteL's MNIST convolutions (channels, batch_norm, features)"
            ),
            Component("encoder", "resnet", ResNetEncoder, doc="He et al.'s ResNet (channels, batch_norm, features)"),
            Component("decoder", "mlp", Decoder, doc="fully connected layers (hidden, activation)"),
            Component(
                "decoder", "conv", ConvDecoder, doc="InteL's MNIST transposed convolutions (channels, batch_norm)"
            ),
            Component(
                "decoder",
                "pixelcnn",
                PixelCNNDecoder,
                doc="He et al.'s PixelCNN on z (kernel_sizes, width, z_channels)",
            ),
            Component("likelihood", "bernoulli", Bernoulli, doc="Bernoulli per pixel (logits); inputs in [0, 1]"),
            Component("likelihood", "gaussian", Gaussian, doc="Gaussian per pixel (scale, learn_scale)"),
            Component("likelihood", "laplace", Laplace, doc="Laplace per pixel (scale, learn_scale)"),
            *(Component("dataset", name, load, doc=doc) for name, (load, doc) in datasets.items()),
            Component(
                "dataset", "npy", load_npy_folder, doc="a folder of .npy splits, memory-mapped (uint8 stays on disk)"
            ),
            Component(
                "dataset",
                "image_folder",
                load_image_folder,
                options=ImageFolderOptions,
                doc="a folder of images: data.path/{train,valid,test}/[<class>/]*.png",
            ),
            Component("logger", "csv", CSVLogger, doc="every value as a row of RUN/logs/csv/metrics.csv"),
            Component("logger", "tensorboard", TensorBoardLogger, doc="TensorBoard event files (vaecore[tensorboard])"),
            Component(
                "logger", "mlflow", MLflowLogger, doc="an MLflow run, a local file store by default (vaecore[mlflow])"
            ),
            Component(
                "logger", "wandb", WandbLogger, doc="a Weights & Biases run, offline by default (vaecore[wandb])"
            ),
        ]


@functools.cache
def builtin_registry() -> ComponentRegistry:
    """The built-in components alone (a config that lists no component plugin)."""
    return ComponentRegistry(plugin_components(BUILTIN, BuiltinComponents))
