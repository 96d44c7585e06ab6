"""Architectures: the recipes of notebooks A-D and the edge-optimised default.

Backend-agnostic Keras 3 (no tf.* ops), so the same code trains under TensorFlow, JAX or PyTorch.
Import this module only after ``train.device.select_backend`` has set KERAS_BACKEND.
"""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import dataclass

import keras
from keras import layers

from runtime.errors import ConfigError


@dataclass(frozen=True)
class Arch:
    name: str
    description: str
    default_size: int
    min_size: int
    colour: str
    normalization: str
    build: Callable[[int, int, int], keras.Model]  # (size, channels, num_classes)


def _conv_bn_relu(x, filters: int, kernel: int = 3):
    x = layers.Conv2D(filters, kernel, padding="same", use_bias=False)(x)
    x = layers.BatchNormalization()(x)
    return layers.ReLU()(x)


def _head(x, num_classes: int):
    # The softmax stays in float32 under mixed precision so probabilities are exact.
    return layers.Activation("softmax", dtype="float32", name="probs")(layers.Dense(num_classes, name="logits")(x))


def build_edge(size: int, channels: int, num_classes: int) -> keras.Model:
    """Three conv-BN-ReLU pairs with max-pooling, global average pooling, one dense layer.

    Designed for full-int8: only Conv2D (BN folds into it), ReLU, MaxPool, Mean and one Dense;
    no large dense layer (most of notebook D's 1.2 M weights), no leaky ReLU, no dropout at
    inference. About 0.29 M parameters, 290 KB as int8.
    """
    inp = keras.Input((size, size, channels), name="image")
    x = inp
    for filters in (32, 64, 128):
        x = _conv_bn_relu(x, filters)
        x = _conv_bn_relu(x, filters)
        x = layers.MaxPooling2D()(x)
    x = layers.GlobalAveragePooling2D()(x)
    x = layers.Dropout(0.3)(x)
    return keras.Model(inp, _head(x, num_classes), name="edge")


def _separable(x, filters: int):
    """Depthwise 3x3 then pointwise 1x1, each with BN and ReLU (both fold into int8 convolutions)."""
    x = layers.DepthwiseConv2D(3, padding="same", use_bias=False)(x)
    x = layers.ReLU()(layers.BatchNormalization()(x))
    return _conv_bn_relu(x, filters, 1)


def compact(widths: tuple[int, int, int], separable: bool, name: str) -> Callable[[int, int, int], keras.Model]:
    """The edge layout (three stages of two 3x3 blocks, max-pooling, global average pooling, one dense layer) at
    other widths; ``separable`` makes every block but the first depthwise-separable (a fraction of the MACs)."""

    def build(size: int, channels: int, num_classes: int) -> keras.Model:
        inp = keras.Input((size, size, channels), name="image")
        x = inp
        for stage, filters in enumerate(widths):
            for block in range(2):
                first = stage == 0 and block == 0
                x = _separable(x, filters) if separable and not first else _conv_bn_relu(x, filters)
            x = layers.MaxPooling2D()(x)
        x = layers.GlobalAveragePooling2D()(x)
        x = layers.Dropout(0.3)(x)
        return keras.Model(inp, _head(x, num_classes), name=name.replace("-", "_"))

    return build


def build_notebook_a(size: int, channels: int, num_classes: int) -> keras.Model:
    """Notebook A: six valid 3x3 convs with leaky ReLU, dense 418 -> 256 (60x60 RGB)."""
    inp = keras.Input((size, size, channels), name="image")
    x = inp
    for filters, pool in ((16, False), (32, True), (32, False), (64, True), (64, False), (128, False)):
        x = layers.LeakyReLU(0.2)(layers.Conv2D(filters, 3)(x))
        if pool:
            x = layers.MaxPooling2D()(x)
    x = layers.AveragePooling2D(2)(x)
    x = layers.Flatten()(x)
    x = layers.Dense(418, activation="relu")(layers.Dropout(0.3)(x))
    x = layers.Dense(256, activation="relu")(layers.Dropout(0.3)(x))
    return keras.Model(inp, _head(x, num_classes), name="notebook_a")


def build_lenet(size: int, channels: int, num_classes: int) -> keras.Model:
    """Notebook B: greyscale LeNet, conv 5x5 (10, 20) with max-pooling, dense 200 -> 100, dropout."""
    inp = keras.Input((size, size, channels), name="image")
    x = layers.MaxPooling2D()(layers.Conv2D(10, 5, activation="relu")(inp))
    x = layers.MaxPooling2D()(layers.Conv2D(20, 5, activation="relu")(x))
    x = layers.Flatten()(x)
    x = layers.Dropout(0.3)(layers.Dense(200, activation="relu")(x))
    x = layers.Dropout(0.3)(layers.Dense(100, activation="relu")(x))
    return keras.Model(inp, _head(x, num_classes), name="lenet")


def build_cifar(size: int, channels: int, num_classes: int) -> keras.Model:
    """Notebook C: conv 5x5x64 + BN, two max-pools, dense 256 -> 128."""
    inp = keras.Input((size, size, channels), name="image")
    x = layers.MaxPooling2D(3, 2, padding="same")(_conv_bn_relu(inp, 64, 5))
    x = layers.MaxPooling2D(3, 2, padding="same")(_conv_bn_relu(x, 64, 5))
    x = layers.Flatten()(x)
    x = layers.Dense(256, activation="relu")(x)
    x = layers.Dense(128, activation="relu")(x)
    return keras.Model(inp, _head(x, num_classes), name="cifar")


def build_notebook_d(size: int, channels: int, num_classes: int) -> keras.Model:
    """Notebook D: conv 16, 32, pool, BN, conv 64, 128, pool, BN, dense 512, BN, dropout 0.5 (30x30)."""
    inp = keras.Input((size, size, channels), name="image")
    x = layers.Conv2D(16, 3, activation="relu")(inp)
    x = layers.Conv2D(32, 3, activation="relu")(x)
    x = layers.BatchNormalization()(layers.MaxPooling2D()(x))
    x = layers.Conv2D(64, 3, activation="relu")(x)
    x = layers.Conv2D(128, 3, activation="relu")(x)
    x = layers.BatchNormalization()(layers.MaxPooling2D()(x))
    x = layers.Dense(512, activation="relu")(layers.Flatten()(x))
    x = layers.Dropout(0.5)(layers.BatchNormalization()(x))
    return keras.Model(inp, _head(x, num_classes), name="notebook_d")


ARCHS: dict[str, Arch] = {a.name: a for a in (
    Arch("edge", "int8-friendly conv-BN-ReLU x6 + GAP, 0.29 M params (the frame pipeline's model)", 32, 8, "rgb", "standardize", build_edge),
    Arch("notebook-a", "notebook A: 6 valid convs, leaky ReLU, dense 418/256", 60, 40, "rgb", "unit", build_notebook_a),
    Arch("lenet", "notebook B: greyscale LeNet 5x5 convs, dense 200/100", 32, 16, "gray", "symmetric", build_lenet),
    Arch("cifar", "notebook C: 2 conv 5x5 + BN, dense 256/128", 32, 8, "rgb", "unit", build_cifar),
    Arch("notebook-d", "notebook D: 4 convs + BN, dense 512", 30, 14, "rgb", "unit", build_notebook_d),
    Arch("edge-s", "edge at widths 24/48/96: 0.16 M params", 32, 8, "rgb", "standardize", compact((24, 48, 96), False, "edge-s")),
    Arch("edge-xs", "edge at widths 24/48/80: 0.13 M params (an int8 build under 150 KB)", 32, 8, "rgb", "standardize",
         compact((24, 48, 80), False, "edge-xs")),
    Arch("edge-l", "edge at widths 48/96/192, 48x48: a teacher to distil from (about 10x edge-xs's MACs)", 48, 8, "rgb",
         "standardize", compact((48, 96, 192), False, "edge-l")),
    Arch("edge-ds", "edge with depthwise-separable blocks, widths 48/96/192: 0.09 M params", 32, 8, "rgb", "standardize",
         compact((48, 96, 192), True, "edge-ds")),
    Arch("edge-ds-s", "edge-ds at widths 32/64/128: 0.04 M params", 32, 8, "rgb", "standardize",
         compact((32, 64, 128), True, "edge-ds-s")),
)}


def build_model(arch: str, size: int, channels: int, num_classes: int) -> keras.Model:
    """Build ``arch`` for ``size`` x ``size`` inputs.

    Raises:
        ConfigError: unknown architecture or an image size below what it can take.
    """
    if arch not in ARCHS:
        raise ConfigError(f"--arch {arch} is unknown; choose one of {', '.join(ARCHS)}")
    spec = ARCHS[arch]
    if size < spec.min_size:
        raise ConfigError(f"--img-size {size} is too small for --arch {arch} (minimum {spec.min_size}, default {spec.default_size})")
    return spec.build(size, channels, num_classes)


@keras.saving.register_keras_serializable(package="signkit")
class SmoothedSparseCrossentropy(keras.losses.Loss):
    """Categorical cross-entropy with label smoothing, on integer labels (Keras's sparse loss has no smoothing)."""

    def __init__(self, num_classes: int, label_smoothing: float, **kwargs):
        super().__init__(**kwargs)
        self.num_classes, self.label_smoothing = num_classes, label_smoothing

    def call(self, y_true, y_pred):
        one_hot = keras.ops.one_hot(keras.ops.cast(keras.ops.reshape(y_true, (-1,)), "int32"), self.num_classes)
        return keras.losses.categorical_crossentropy(one_hot * (1 - self.label_smoothing) + self.label_smoothing / self.num_classes,
                                                     y_pred)

    def get_config(self):
        return {**super().get_config(), "num_classes": self.num_classes, "label_smoothing": self.label_smoothing}


@keras.saving.register_keras_serializable(package="signkit")
class DistillationLoss(keras.losses.Loss):
    """Hinton et al. 2015: (1 - weight) x cross-entropy with the label + weight x T^2 x KL(teacher || student), both
    softened by the temperature T.

    ``y_true`` is (N, 1 + K): the integer label, then the teacher's probabilities on the same augmented crop. The
    student gives probabilities, not logits: softmax(log p / T) is softmax(z / T), the shift log-sum-exp(z) cancelling."""

    def __init__(self, num_classes: int, temperature: float, weight: float, **kwargs):
        super().__init__(**kwargs)
        self.num_classes, self.temperature, self.weight = num_classes, temperature, weight

    def call(self, y_true, y_pred):
        ops = keras.ops
        label = ops.cast(y_true[:, 0], "int32")
        teacher = y_true[:, 1:]
        hard = keras.losses.categorical_crossentropy(ops.one_hot(label, self.num_classes), y_pred)
        t = self.temperature
        soft_teacher = ops.softmax(ops.log(ops.clip(teacher, 1e-7, 1.0)) / t, axis=-1)
        log_student = ops.log_softmax(ops.log(ops.clip(y_pred, 1e-7, 1.0)) / t, axis=-1)
        kl = ops.sum(soft_teacher * (ops.log(ops.clip(soft_teacher, 1e-7, 1.0)) - log_student), axis=-1)
        return (1 - self.weight) * hard + self.weight * t * t * kl

    def get_config(self):
        return {**super().get_config(), "num_classes": self.num_classes, "temperature": self.temperature,
                "weight": self.weight}


@keras.saving.register_keras_serializable(package="signkit")
def label_accuracy(y_true, y_pred):
    """Top-1 accuracy against the label in column 0 of a distillation target (see DistillationLoss)."""
    ops = keras.ops
    return ops.cast(ops.equal(ops.cast(y_true[:, 0], "int32"), ops.cast(ops.argmax(y_pred, axis=-1), "int32")), "float32")


def count_macs(model: keras.Model) -> int:
    """Multiply-accumulates of one forward pass of one image (convolutions and dense layers; the rest is noise).

    A Raspberry Pi core's int8 throughput is a small fraction of a desktop core's, and the frame
    pipeline classifies every proposal, so MACs per ROI decide its frame rate more than anything here.
    """
    total = 0
    for layer in model.layers:
        kind = type(layer).__name__
        if kind not in ("Conv2D", "DepthwiseConv2D", "SeparableConv2D", "Dense"):
            continue
        out = layer.output.shape
        cin = int(layer.input.shape[-1])
        if kind == "Dense":
            total += cin * int(out[-1])
            continue
        kh, kw = layer.kernel_size
        positions = int(out[1]) * int(out[2])
        if kind == "Conv2D":
            total += positions * kh * kw * cin * int(out[-1]) // getattr(layer, "groups", 1)
        elif kind == "DepthwiseConv2D":
            total += positions * kh * kw * cin * getattr(layer, "depth_multiplier", 1)
        else:  # SeparableConv2D: depthwise, then 1x1 pointwise
            mult = getattr(layer, "depth_multiplier", 1)
            total += positions * (kh * kw * cin * mult + cin * mult * int(out[-1]))
    return total
