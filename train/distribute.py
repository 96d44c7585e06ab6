"""Training past one device with the backends' own tools (``--distribute``); nothing of our own.

* TensorFlow: ``mirrored`` is ``tf.distribute.MirroredStrategy`` over every GPU of the machine;
  ``multiworker`` is ``tf.distribute.MultiWorkerMirroredStrategy`` across machines, configured by
  ``TF_CONFIG`` (one process per machine, each given the same flags).
* JAX: ``mirrored`` is ``keras.distribution.DataParallel`` over every device JAX sees.

``--batch-size`` is per replica: the global batch is it times the replicas, and the peak learning
rate grows by the same factor (the linear scaling rule, Goyal et al. 2017; the one-epoch warm-up
that already starts every run is what makes it safe). A distributed run writes the same model.keras
and metadata as a single-device one, with the replicas, global batch and learning rate recorded.

``SIGNKIT_LOGICAL_CPUS=N`` splits the CPU into N logical devices (TensorFlow), so the mirrored path
can be tested on a machine without GPUs.
"""

from __future__ import annotations

import contextlib
import os
from collections.abc import Iterator
from dataclasses import dataclass
from typing import Any

from runtime.errors import ConfigError

STRATEGIES = ("none", "mirrored", "multiworker")


@dataclass
class Distribution:
    kind: str
    replicas: int
    strategy: Any = None  # a tf.distribute strategy, for its scope

    @contextlib.contextmanager
    def scope(self) -> Iterator[None]:
        """Where the model and optimizer must be built (and loaded) for the strategy to place them."""
        if self.strategy is None:
            yield
        else:
            with self.strategy.scope():
                yield

    def validation_data(self, x: Any, y: Any, batch_size: int) -> Any:
        """Validation data in the form the strategy splits well: numpy arrays alone, or a tf.data dataset under a
        tf.distribute strategy (numpy arrays whose last batch does not split evenly over the replicas fail there)."""
        if self.strategy is None:
            return (x, y)
        import tensorflow as tf

        return tf.data.Dataset.from_tensor_slices((x, y)).batch(batch_size)

    def record(self, batch_size: int, lr: float) -> dict[str, Any]:
        return {"strategy": self.kind, "replicas": self.replicas, "global_batch": batch_size * self.replicas,
                "lr": lr * self.replicas}


def split_logical_cpus() -> None:
    """Honour SIGNKIT_LOGICAL_CPUS (tests): call after importing TensorFlow, before it starts its devices."""
    n = int(os.environ.get("SIGNKIT_LOGICAL_CPUS", "0") or 0)
    if n > 1:
        import tensorflow as tf

        cpus = tf.config.list_physical_devices("CPU")
        tf.config.set_logical_device_configuration(cpus[0], [tf.config.LogicalDeviceConfiguration()] * n)


def distribution(kind: str, backend: str) -> Distribution:
    """The strategy for ``--distribute``; raise a one-line error where the backend cannot do it."""
    if kind not in STRATEGIES:
        raise ConfigError(f"--distribute {kind} is unknown; choose one of {', '.join(STRATEGIES)}")
    if kind == "none":
        return Distribution("none", 1)
    if backend == "tensorflow":
        import tensorflow as tf

        if kind == "multiworker":
            if "TF_CONFIG" not in os.environ:
                raise ConfigError("--distribute multiworker needs TF_CONFIG (the cluster and this worker's index); see "
                                  "https://www.tensorflow.org/guide/distributed_training")
            strategy = tf.distribute.MultiWorkerMirroredStrategy()
        else:
            gpus = tf.config.list_logical_devices("GPU")
            devices = [d.name for d in (gpus or tf.config.list_logical_devices("CPU"))]
            strategy = tf.distribute.MirroredStrategy(devices)
        return Distribution(kind, int(strategy.num_replicas_in_sync), strategy)
    if backend == "jax":
        if kind == "multiworker":
            raise ConfigError("--distribute multiworker runs on the TensorFlow backend; under JAX, start one process per "
                              "host with jax.distributed.initialize() and use --distribute mirrored")
        import jax
        import keras

        devices = jax.devices()
        keras.distribution.set_distribution(keras.distribution.DataParallel(devices=devices))
        return Distribution(kind, len(devices))
    raise ConfigError(f"--distribute {kind} is not available under the {backend} backend; use tensorflow or jax")
