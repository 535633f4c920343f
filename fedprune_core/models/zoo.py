"""The model zoo: each model is one layer table (models/table.py), sized from the dataset.

- `simple_cnn`: the seed's MNIST CNN (two 3x3 convolutions with 32 and 64 filters, each
  followed by 2x2 max-pooling, a 256-unit hidden layer).
- `heterofl_conv`: HeteroFL's MNIST CNN (Diao et al. 2021, their src/models/conv.py, as
  Flower's baselines/heterofl/models.py `Conv`): four 3x3 same-padded convolutions with
  ceil(width x 64, 128, 256, 512) channels, each followed by the scaler (while training),
  static batch norm and ReLU, 2x2 max-pooling after the first three, then global average
  pooling and the linear output (1,556,874 parameters and 40.0 M multiply-accumulates a sample
  on MNIST at width 1; 6,594 parameters at HeteroFL's e = 1/16). HeteroFL zeroes the linear
  output's bias at initialisation; here PyTorch's default, as for every model.
- `mcmahan_cnn`: the MNIST CNN of McMahan et al. 2017, "Communication-Efficient Learning of
  Deep Networks from Decentralized Data" (two 5x5 convolutions with 32 and 64 channels, each
  followed by 2x2 max-pooling, a 512-unit layer, softmax output; 1,663,370 parameters on MNIST).
- `vgg_cifar`: a small VGG-style CNN for 32x32x3 inputs such as CIFAR-10 (Simonyan & Zisserman
  2015): three blocks of two 3x3 convolutions (32, 64, 128 filters) with 2x2 max-pooling after
  each block, then a 256-unit hidden layer.
- `leaf_cnn`: LEAF's FEMNIST CNN (Caldas et al. 2018, "LEAF: A Benchmark for Federated
  Settings", models/femnist/cnn.py): two 5x5 same-padded convolutions with 32 and 64 filters,
  each followed by ReLU and 2x2 max-pooling, a 2048-unit dense layer, then the classes (62 on
  FEMNIST; 6,603,710 parameters). LEAF's TensorFlow layers start from Glorot-uniform weights and
  zero biases; here PyTorch's default initialisation, as for every model.
- `preresnet18`: HeteroFL's pre-activation ResNet-18 (Diao et al. 2021, "HeteroFL: Computation
  and Communication Efficient Federated Learning for Heterogeneous Clients", ICLR; their
  src/models/resnet.py `resnet18`): a 3x3 stem convolution, four stages of two pre-activation
  blocks (norm, ReLU, 3x3 convolution, norm, ReLU, 3x3 convolution, plus the block's input; a
  stage's first block has stride 2 from stage 2 on and a 1x1 strided shortcut convolution on
  its normalised input), hidden sizes ceil(`width` x 64, 128, 256, 512), then norm, ReLU, global
  average pooling and the linear output. No convolution has a bias. Normalisation `bn` is
  HeteroFL's static batch norm (sBN), `gn` their GroupNorm(4, channels). HeteroFL initialises
  norm weights to 1 and biases to 0 (as here) and zeroes the output layer's bias (here PyTorch's
  default uniform bias).
- `resnet18`: the CIFAR ResNet-18 of FjORD (Horvath et al. 2021, NeurIPS; Flower's
  baselines/fjord/fjord/models.py `ResNet18`, after kuangliu/pytorch-cifar): a 3x3 stem
  convolution with batch norm and ReLU, four stages of two post-activation basic blocks
  (convolution, norm, ReLU, convolution, norm, plus the shortcut, ReLU; a 1x1 strided
  convolution with its norm as the shortcut where the shape changes), 64/128/256/512 channels
  times `width`, global average pooling (FjORD's avg_pool2d(4) on the 4x4 map of 32x32 inputs)
  and the linear output. FjORD keeps one batch norm per width with running statistics the
  server averages; here one static batch norm whose evaluation statistics are computed for
  each evaluated width by a pass over training data (fl/evaluate.py), so the model's state is
  its parameters alone.

Normalisation (`model_norm`): the CNNs (simple_cnn, mcmahan_cnn, leaf_cnn, heterofl_conv) put
it right after each convolution, before the ReLU and the pooling, as HeteroFL's Conv does, so
HeteroFL's scaler (applied to a convolution's output) sits before it and the norm cancels its
scale: `none` (the seed's CNNs, their default), `bn` (static batch norm, heterofl_conv's default)
or `gn` (group norm, 4 groups). The ResNets take `bn` (default) or `gn`.

In both ResNets every tensor adding into a stage's residual stream (its stem or shortcut, each
block's last convolution, and their norms) is one group, so structured sub-models keep one
channel set per stream (models/table.py).
"""

from __future__ import annotations

import math

from ..data.catalog import DATASETS, DatasetInfo
from .table import Layer, ModelSpec

GN_GROUPS = 4  # HeteroFL's GroupNorm(4, channels)
STAGES = (64, 128, 256, 512)
BLOCKS = (2, 2, 2, 2)


def _conv_block(name: str, width: int, kernel: int, norm: str, pool: int) -> tuple[Layer, ...]:
    """A convolution, then (with a norm) the norm row, ReLU and pooling after it: the norm
    normalises the convolution's whole map, as HeteroFL's Conv (conv, scaler, norm, ReLU,
    max-pool). Without one, the seed's order (pooling before the ReLU: the same function)."""
    if norm == "none":
        return (Layer(name, "conv", width, kernel=kernel, pool=pool),)
    return (Layer(name, "conv", width, kernel=kernel, relu=False),
            _norm(f"{name}_norm", norm, relu=True, pool=pool))


def _two_conv_cnn(name: str, info: DatasetInfo, kernel: int, hidden: int,
                  norm: str) -> ModelSpec:
    return ModelSpec(name, info.channels, info.image_size, (
        *_conv_block("conv1", 32, kernel, norm, 2),
        *_conv_block("conv2", 64, kernel, norm, 2),
        Layer("fc1", "linear", hidden),
        Layer("fc2", "linear", info.num_classes)))


def simple_cnn(info: DatasetInfo, norm: str = "none") -> ModelSpec:
    return _two_conv_cnn("simple_cnn", info, kernel=3, hidden=256, norm=norm)


def mcmahan_cnn(info: DatasetInfo, norm: str = "none") -> ModelSpec:
    return _two_conv_cnn("mcmahan_cnn", info, kernel=5, hidden=512, norm=norm)


def leaf_cnn(info: DatasetInfo, norm: str = "none") -> ModelSpec:
    return _two_conv_cnn("leaf_cnn", info, kernel=5, hidden=2048, norm=norm)


def heterofl_conv(info: DatasetInfo, width: float = 1.0, norm: str = "bn") -> ModelSpec:
    hidden = stage_widths(width)
    rows = [row for i, h in enumerate(hidden)
            for row in _conv_block(f"conv{i + 1}", h, 3, norm, 2 if i < len(hidden) - 1 else 1)]
    return ModelSpec("heterofl_conv", info.channels, info.image_size, (
        *rows, Layer("linear", "linear", info.num_classes, avgpool=True)))


def vgg_cifar(info: DatasetInfo) -> ModelSpec:
    convs = [Layer(f"conv{i + 1}", "conv", width, kernel=3, pool=2 if i % 2 else 1)
             for i, width in enumerate((32, 32, 64, 64, 128, 128))]
    return ModelSpec("vgg_cifar", info.channels, info.image_size, (
        *convs, Layer("fc1", "linear", 256), Layer("fc2", "linear", info.num_classes)))


def _norm(name: str, norm: str, **kw) -> Layer:
    return Layer(name, norm, num_groups=GN_GROUPS if norm == "gn" else 0, **kw)


def _conv(name: str, width: int, kernel: int, stride: int = 1, **kw) -> Layer:
    return Layer(name, "conv", width, kernel=kernel, stride=stride, bias=False, relu=False, **kw)


def stage_widths(width: float) -> list[int]:
    """HeteroFL's hidden sizes at a model rate: ceil(rate x 64, 128, 256, 512)."""
    return [max(1, math.ceil(width * c)) for c in STAGES]


def preresnet18(info: DatasetInfo, width: float = 1.0, norm: str = "bn") -> ModelSpec:
    hidden = stage_widths(width)
    rows = [_conv("conv1", hidden[0], 3)]
    stream, x, in_planes = "conv1", "conv1", hidden[0]  # stream group, block input row
    for s, (planes, blocks) in enumerate(zip(hidden, BLOCKS)):
        for b in range(blocks):
            stride, p = (2 if s > 0 and b == 0 else 1), f"layer{s + 1}_{b}_"
            rows.append(_norm(p + "n1", norm, input=x, relu=True))
            shortcut = x
            if stride != 1 or in_planes != planes:  # reads the normalised input, as HeteroFL
                rows.append(_conv(p + "shortcut", planes, 1, stride))
                stream = shortcut = p + "shortcut"
            rows += [_conv(p + "conv1", planes, 3, stride, input=p + "n1"),
                     _norm(p + "n2", norm, relu=True),
                     _conv(p + "conv2", planes, 3, group=stream, add=shortcut)]
            x, in_planes = p + "conv2", planes
    rows += [_norm("n4", norm, relu=True),
             Layer("linear", "linear", info.num_classes, avgpool=True)]
    return ModelSpec("preresnet18", info.channels, info.image_size, tuple(rows))


def resnet18(info: DatasetInfo, width: float = 1.0, norm: str = "bn") -> ModelSpec:
    hidden = stage_widths(width)
    rows = [_conv("conv1", hidden[0], 3), _norm("bn1", norm, relu=True)]
    stream, x, in_planes = "conv1", "bn1", hidden[0]
    for s, (planes, blocks) in enumerate(zip(hidden, BLOCKS)):
        for b in range(blocks):
            stride, p = (2 if s > 0 and b == 0 else 1), f"layer{s + 1}_{b}_"
            shortcut = x
            if stride != 1 or in_planes != planes:
                rows += [_conv(p + "shortcut", planes, 1, stride, input=x),
                         _norm(p + "shortcut_bn", norm)]
                stream, shortcut = p + "shortcut", p + "shortcut_bn"
            rows += [_conv(p + "conv1", planes, 3, stride, input=x),
                     _norm(p + "bn1", norm, relu=True),
                     _conv(p + "conv2", planes, 3, group=stream),
                     _norm(p + "bn2", norm, add=shortcut, relu=True)]
            x, in_planes = p + "bn2", planes
    rows.append(Layer("linear", "linear", info.num_classes, avgpool=True))
    return ModelSpec("resnet18", info.channels, info.image_size, tuple(rows))


MODELS = {"simple_cnn": simple_cnn, "mcmahan_cnn": mcmahan_cnn, "vgg_cifar": vgg_cifar,
          "leaf_cnn": leaf_cnn, "heterofl_conv": heterofl_conv, "preresnet18": preresnet18,
          "resnet18": resnet18}
# Models with a width factor (model_width): HeteroFL's model rates.
SCALABLE = ("heterofl_conv", "preresnet18", "resnet18")
# Each model's normalisations (model_norm), its default first.
NORMS = {"simple_cnn": ("none", "bn", "gn"), "mcmahan_cnn": ("none", "bn", "gn"),
         "leaf_cnn": ("none", "bn", "gn"), "heterofl_conv": ("bn", "gn", "none"),
         "vgg_cifar": ("none",), "preresnet18": ("bn", "gn"), "resnet18": ("bn", "gn")}


def model_spec(name: str, info: DatasetInfo, width: float = 1.0, norm: str = "auto") -> ModelSpec:
    """The table of model `name` for the dataset; `width` scales the hidden sizes of the
    models in SCALABLE, `norm` picks a normalisation among the model's NORMS (auto: its
    default, the first)."""
    norm = NORMS[name][0] if norm == "auto" else norm
    if norm not in NORMS[name]:
        raise ValueError(f"{name} takes normalisation {', '.join(NORMS[name])}, not {norm!r}")
    if name in SCALABLE:
        return MODELS[name](info, width, norm)
    if width != 1.0:
        raise ValueError(f"{name} has no width factor; that is for {', '.join(SCALABLE)}")
    return MODELS[name](info) if name == "vgg_cifar" else MODELS[name](info, norm)


def spec_for(cfg) -> ModelSpec:
    """The model an ExperimentConfig describes (its model, dataset, width and norm)."""
    return model_spec(cfg.model, DATASETS[cfg.dataset], cfg.model_width, cfg.model_norm)
