"""Choose the Keras backend and the device before Keras is imported."""

from __future__ import annotations

import contextlib
import os
import sys
from collections.abc import Iterator

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


@contextlib.contextmanager
def native_stderr_quiet(enabled: bool = True) -> Iterator[None]:
    """Send what native code writes to stderr to /dev/null for the duration (Python exceptions still propagate).

    TensorFlow logs through absl before its log level is read: every CPU machine shows "failed call to
    cuInit" and oneDNN notes when TensorFlow first starts, which users read as a failure. It is quiet
    only where no GPU was asked for (``--device gpu`` keeps every CUDA message)."""
    if not enabled:
        yield
        return
    sys.stderr.flush()
    saved = os.dup(2)
    devnull = os.open(os.devnull, os.O_WRONLY)
    os.dup2(devnull, 2)
    try:
        yield
    finally:
        os.dup2(saved, 2)
        os.close(saved)
        os.close(devnull)


def gpu_available(backend: str, quiet: bool = True) -> bool:
    """Whether the backend sees a GPU (starting the backend, quietly unless ``quiet`` is False)."""
    try:
        with native_stderr_quiet(quiet):
            if backend == "tensorflow":
                import tensorflow as tf

                from train.distribute import split_logical_cpus

                split_logical_cpus()
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
        gpu_available(backend)  # start the backend quietly all the same
        return "cpu"
    has_gpu = gpu_available(backend, quiet=device != "gpu")
    if device == "gpu" and not has_gpu:
        raise ConfigError(f"--device gpu: no GPU is visible to the {backend} backend; pass --device cpu")
    return "gpu" if has_gpu else "cpu"
