"""Choose the Keras backend and the device before Keras is imported."""

from __future__ import annotations

import os

from runtime.errors import ConfigError

BACKENDS = ("tensorflow", "jax", "torch")


def select_backend(backend: str, device: str) -> None:
    """Set KERAS_BACKEND and hide GPUs for ``device == "cpu"``; call before ``import keras``."""
    if backend not in BACKENDS:
        raise ConfigError(f"--backend {backend} is unknown; choose one of {', '.join(BACKENDS)}")
    os.environ["KERAS_BACKEND"] = backend
    os.environ.setdefault("TF_CPP_MIN_LOG_LEVEL", "2")
    if device == "cpu":
        os.environ["CUDA_VISIBLE_DEVICES"] = ""
        os.environ["JAX_PLATFORMS"] = "cpu"


def gpu_available(backend: str) -> bool:
    try:
        if backend == "tensorflow":
            import tensorflow as tf

            return bool(tf.config.list_physical_devices("GPU"))
        if backend == "jax":
            import jax

            return any(d.platform == "gpu" for d in jax.devices())
        import torch

        return bool(torch.cuda.is_available())
    except ImportError:
        raise ConfigError(f"--backend {backend} is not installed; pip install {'tensorflow' if backend == 'tensorflow' else backend}") from None


def resolve_device(backend: str, device: str) -> str:
    """Return "gpu" or "cpu"; with ``device == "gpu"`` and no GPU visible, raise."""
    if device == "cpu":
        return "cpu"
    has_gpu = gpu_available(backend)
    if device == "gpu" and not has_gpu:
        raise ConfigError(f"--device gpu: no GPU is visible to the {backend} backend; pass --device cpu")
    return "gpu" if has_gpu else "cpu"
