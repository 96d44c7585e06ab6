"""Training's batch normalisation on TensorFlow's fused kernel: the same arithmetic as Keras's, a plain model saved."""

from __future__ import annotations

import numpy as np
import pytest

keras = pytest.importorskip("keras")
tf = pytest.importorskip("tensorflow")

from train.batch_norm import fuse_batch_norm
from train.models import build_model

pytestmark = pytest.mark.skipif(keras.backend.backend() != "tensorflow", reason="the fused kernel is TensorFlow's")


def _twins(build):
    """Two models of the same weights, the second with the fused kernel."""
    keras.utils.set_random_seed(1)
    plain, fused = build(), build()
    fused.set_weights(plain.get_weights())
    for layer in plain.layers + fused.layers:
        if isinstance(layer, keras.layers.Dropout):
            layer.rate = 0.0  # the two would drop different units
    return plain, fused


def _step(model, x, loss):
    """One training call: the output, the gradients, and the moving statistics after it."""
    with tf.GradientTape() as tape:
        out = model(x, training=True)
        value = loss(out)
    grads = tape.gradient(value, model.trainable_weights)
    return out.numpy(), [g.numpy() for g in grads], [w.numpy() for w in model.non_trainable_weights]


def test_a_fused_training_step_computes_what_keras_computes():
    rng = np.random.default_rng(0)
    plain, fused = _twins(lambda: build_model("edge-xs", 32, 3, 5))
    x = tf.constant(rng.normal(size=(8, 32, 32, 3)).astype(np.float32))
    y = np.eye(5, dtype=np.float32)[rng.integers(0, 5, 8)]

    def loss(p):
        return keras.losses.categorical_crossentropy(y, p)

    bns = sum(isinstance(layer, keras.layers.BatchNormalization) for layer in plain.layers)
    assert bns > 0 and fuse_batch_norm(fused) == bns
    out_p, grads_p, moving_p = _step(plain, x, loss)
    out_f, grads_f, moving_f = _step(fused, x, loss)
    np.testing.assert_allclose(out_f, out_p, rtol=1e-4, atol=1e-4)
    for gp, gf in zip(grads_p, grads_f):
        np.testing.assert_allclose(gf, gp, rtol=1e-3, atol=1e-3 * np.abs(gp).max())
    for mp, mf in zip(moving_p, moving_f):  # the moving means and (biased) variances move alike
        np.testing.assert_allclose(mf, mp, rtol=1e-5, atol=1e-6)
    # inference is Keras's own code, on moving statistics that moved alike
    np.testing.assert_allclose(fused(x, training=False).numpy(), plain(x, training=False).numpy(), rtol=1e-5, atol=1e-6)


def test_a_model_trained_fused_saves_as_a_plain_keras_model_and_keeps_learning(tmp_path):
    keras.utils.set_random_seed(2)
    model = build_model("edge-xs", 16, 3, 3)
    model.compile(keras.optimizers.Adam(1e-2), loss="sparse_categorical_crossentropy")
    assert fuse_batch_norm(model) > 0
    assert fuse_batch_norm(model) == 0  # once is enough: the layers have it
    rng = np.random.default_rng(0)
    labels = rng.integers(0, 3, 48)
    x = rng.normal(size=(48, 16, 16, 3)).astype(np.float32) * 0.3 + labels[:, None, None, None]
    first = float(model.train_on_batch(x, labels))
    for _ in range(20):
        last = float(model.train_on_batch(x, labels))
    assert last < first / 2
    model.save(tmp_path / "m.keras")
    loaded = keras.saving.load_model(tmp_path / "m.keras")  # no custom objects: the layers are Keras's
    bn = [layer for layer in loaded.layers if isinstance(layer, keras.layers.BatchNormalization)]
    assert bn and all(type(layer) is keras.layers.BatchNormalization and "call" not in vars(layer) for layer in bn)
    np.testing.assert_allclose(loaded.predict(x, verbose=0), model.predict(x, verbose=0), atol=1e-6)


def test_layers_the_fused_kernel_does_not_cover_keep_keras_code():
    inp = keras.Input((8, 8, 4))
    x = keras.layers.BatchNormalization(renorm=True)(inp)
    x = keras.layers.BatchNormalization(center=False)(x)
    x = keras.layers.BatchNormalization()(x)
    flat = keras.layers.BatchNormalization()(keras.layers.Flatten()(x))  # 2-D: Keras's code at call time
    model = keras.Model(inp, flat)
    assert fuse_batch_norm(model) == 2
    out = model(np.ones((2, 8, 8, 4), np.float32), training=True)
    assert out.shape == (2, 256)
