"""The model zoo: each model is one layer table, sized from the dataset.

- `simple_cnn`: the seed's MNIST CNN (two 3x3 convolutions with 32 and 64 filters, each
  followed by 2x2 max-pooling, a 256-unit hidden layer).
- `mcmahan_cnn`: the MNIST CNN of McMahan et al. 2017, "Communication-Efficient Learning of
  Deep Networks from Decentralized Data" (two 5x5 convolutions with 32 and 64 channels, each
  followed by 2x2 max-pooling, a 512-unit layer, softmax output; 1,663,370 parameters on MNIST).
- `vgg_cifar`: a small VGG-style CNN for 32x32x3 inputs such as CIFAR-10 (Simonyan & Zisserman
  2015): three blocks of two 3x3 convolutions (32, 64, 128 filters) with 2x2 max-pooling after
  each block, then a 256-unit hidden layer.
"""

from __future__ import annotations

from ..data.catalog import DatasetInfo
from .table import Layer, ModelSpec


def _two_conv_cnn(name: str, info: DatasetInfo, kernel: int, hidden: int) -> ModelSpec:
    return ModelSpec(name, info.channels, info.image_size, (
        Layer("conv1", "conv", 32, kernel=kernel, pool=2),
        Layer("conv2", "conv", 64, kernel=kernel, pool=2),
        Layer("fc1", "linear", hidden),
        Layer("fc2", "linear", info.num_classes)))


def simple_cnn(info: DatasetInfo) -> ModelSpec:
    return _two_conv_cnn("simple_cnn", info, kernel=3, hidden=256)


def mcmahan_cnn(info: DatasetInfo) -> ModelSpec:
    return _two_conv_cnn("mcmahan_cnn", info, kernel=5, hidden=512)


def vgg_cifar(info: DatasetInfo) -> ModelSpec:
    convs = [Layer(f"conv{i + 1}", "conv", width, kernel=3, pool=2 if i % 2 else 1)
             for i, width in enumerate((32, 32, 64, 64, 128, 128))]
    return ModelSpec("vgg_cifar", info.channels, info.image_size, (
        *convs, Layer("fc1", "linear", 256), Layer("fc2", "linear", info.num_classes)))


MODELS = {"simple_cnn": simple_cnn, "mcmahan_cnn": mcmahan_cnn, "vgg_cifar": vgg_cifar}


def model_spec(name: str, info: DatasetInfo) -> ModelSpec:
    return MODELS[name](info)
