"""TensorFlow's fused batch-normalisation kernel behind Keras 3's BatchNormalization while a classifier trains.

Keras 3 normalises a training batch with separate ops (moments, then the normalisation, each with its gradient);
TensorFlow's FusedBatchNormV3 does it in one pass each way (oneDNN on x86, which also folds the ReLU after it
in). The same arithmetic: the batch's mean and biased variance normalise it, and the moving statistics move
toward them by the layer's momentum. The layers stay Keras's own, so a saved model is a plain Keras model;
only the training step calls another kernel. Measured in docs/decisions.md ("Fused batch normalisation").
"""

from __future__ import annotations

from typing import Any


def fuse_batch_norm(model: Any) -> int:
    """Give every BatchNormalization layer of ``model`` (nested models too) TensorFlow's fused kernel for its
    training calls; how many layers got it. Nothing changes under another backend, and a call the fused kernel
    does not cover (inference, a mask, not 4-D, not float32, renorm, synchronised or without scale and centre)
    runs Keras's own code."""
    import keras

    if keras.backend.backend() != "tensorflow":
        return 0
    done = 0
    for layer in _layers(model):
        if (isinstance(layer, keras.layers.BatchNormalization) and not layer.renorm and not layer.synchronized
                and layer.center and layer.scale and layer.axis in (-1, 3) and "call" not in vars(layer)):
            layer.call = _fused_call(layer, layer.call)
            done += 1
    return done


def _layers(model: Any) -> list[Any]:
    """``model``'s layers, those of nested models included."""
    found = []
    for layer in getattr(model, "layers", ()):
        found.append(layer)
        found += _layers(layer)
    return found


def _fused_call(layer: Any, keras_call: Any) -> Any:
    import tensorflow as tf

    def call(inputs: Any, training: Any = None, mask: Any = None) -> Any:
        if (training is not True or not layer.trainable or mask is not None or inputs.shape.rank != 4
                or inputs.dtype != tf.float32):
            return keras_call(inputs, training=training, mask=mask)
        y, mean, variance = tf.compat.v1.nn.fused_batch_norm(inputs, layer.gamma, layer.beta, epsilon=layer.epsilon,
                                                             is_training=True)[:3]
        n = tf.cast(tf.reduce_prod(tf.shape(inputs)[:3]), tf.float32)
        variance = variance * (n - 1) / n  # the kernel returns the unbiased variance; Keras moves toward the biased one
        layer.moving_mean.assign(layer.moving_mean * layer.momentum + mean * (1.0 - layer.momentum))
        layer.moving_variance.assign(layer.moving_variance * layer.momentum + variance * (1.0 - layer.momentum))
        return y

    return call
