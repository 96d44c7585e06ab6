"""Training past one device with the backends' own tools (``--distribute``); nothing of our own.

* ``mirrored``: every device of this machine, data-parallel. TensorFlow's ``MirroredStrategy`` (every
  GPU), or under ``--backend jax`` ``keras.distribution.DataParallel`` over every device JAX sees.
* ``multiworker``: several processes, on one machine or several, one run. Keras's multi-process path
  on the JAX backend: ``jax.distributed`` joins the processes through a coordinator (process 0's
  address), ``keras.distribution.DataParallel`` spreads each global batch over every process's
  devices, and CPU collectives go through gloo. (TensorFlow's ``MultiWorkerMirroredStrategy`` fails
  inside Keras 3's ``fit``, keras-team/keras#20585, so it is refused.)

``--batch-size`` is per device: the global batch is it times the devices, and the peak learning rate
grows by the same factor (the linear scaling rule, Goyal et al. 2017; the one-epoch warm-up that
starts every run is what makes it safe). Each process draws the same global batches and augments and
feeds only its own share of each (``train.training``). Process 0 writes the run; the others write
into a temp folder of their own what the collective steps make them write (Keras saves a model with
every process taking part). A multi-process run writes the same model.keras and metadata as any other,
with the processes, devices, global batch and learning rate recorded.

``SIGNKIT_LOGICAL_CPUS=N`` splits the CPU into N logical devices (TensorFlow), so the mirrored path
can be tested on a machine without GPUs; for JAX, ``XLA_FLAGS=--xla_force_host_platform_device_count=N``.
"""

from __future__ import annotations

import contextlib
import os
from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from runtime.errors import ConfigError

STRATEGIES = ("none", "mirrored", "multiworker")
HEARTBEAT_SECONDS = int(os.environ.get("SIGNKIT_HEARTBEAT_SECONDS", "60"))  # a process silent this long has died
JOIN_SECONDS = 300  # how long the processes wait for one another to start


@dataclass(frozen=True)
class Cluster:
    """Where a multi-process run's processes meet: process 0's address, how many there are, which one this is."""

    coordinator: str
    processes: int
    process_id: int

    def check(self) -> Cluster:
        host, _, port = self.coordinator.rpartition(":")
        if not host or not port.isdigit():
            raise ConfigError(f"--coordinator {self.coordinator} is not HOST:PORT (process 0's address, e.g. 10.0.0.1:23456)")
        if self.processes < 2:
            raise ConfigError(f"--num-processes {self.processes}: a multi-process run needs at least 2")
        if not 0 <= self.process_id < self.processes:
            raise ConfigError(f"--process-id {self.process_id} must be 0..{self.processes - 1} (one per process, 0 on the "
                              f"coordinator's machine)")
        return self


@dataclass
class Distribution:
    kind: str
    replicas: int  # devices the global batch is spread over
    strategy: Any = None  # a tf.distribute strategy, for its scope
    process_id: int = 0
    processes: int = 1

    @property
    def chief(self) -> bool:
        """The process that writes the run."""
        return self.process_id == 0

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
        return {"strategy": self.kind, "replicas": self.replicas, "processes": self.processes,
                "global_batch": batch_size * self.replicas, "lr": lr * self.replicas}

    def share(self, global_batch: int) -> slice:
        """This process's rows of a global batch (every process gets as many)."""
        local = global_batch // self.processes
        return slice(self.process_id * local, (self.process_id + 1) * local)


CHECKPOINT_FILES = ("state.json", "last.keras", "best.keras")


def share_checkpoint(dist: Distribution, ckpt_dir: Path) -> None:
    """Send process 0's checkpoint to every other process (``--resume`` of a multi-process run): each loads the same
    model, wherever it runs; only process 0's machine holds the run. Every process must call it."""
    import numpy as np
    from jax.experimental import multihost_utils

    ckpt_dir.mkdir(parents=True, exist_ok=True)
    for name in CHECKPOINT_FILES:
        data = (ckpt_dir / name).read_bytes() if dist.chief and (ckpt_dir / name).is_file() else b""
        size = int(multihost_utils.broadcast_one_to_all(np.array(len(data), np.int64), is_source=dist.chief))
        if not size:
            continue
        buf = np.frombuffer(data, np.uint8) if dist.chief else np.zeros(size, np.uint8)
        got = np.asarray(multihost_utils.broadcast_one_to_all(buf, is_source=dist.chief))
        if not dist.chief:
            (ckpt_dir / name).write_bytes(got.tobytes())


def split_logical_cpus() -> None:
    """Honour SIGNKIT_LOGICAL_CPUS (tests): call after importing TensorFlow, before it starts its devices."""
    n = int(os.environ.get("SIGNKIT_LOGICAL_CPUS", "0") or 0)
    if n > 1:
        import tensorflow as tf

        cpus = tf.config.list_physical_devices("CPU")
        tf.config.set_logical_device_configuration(cpus[0], [tf.config.LogicalDeviceConfiguration()] * n)


def join(cluster: Cluster) -> None:
    """Join the other processes of a multi-process run (JAX); call before anything starts JAX's devices.

    Raises:
        ConfigError: the processes did not all arrive within JOIN_SECONDS.
    """
    import jax

    jax.config.update("jax_cpu_collectives_implementation", "gloo")  # CPU collectives across processes
    try:
        jax.distributed.initialize(coordinator_address=cluster.coordinator, num_processes=cluster.processes,
                                   process_id=cluster.process_id, initialization_timeout=JOIN_SECONDS,
                                   heartbeat_timeout_seconds=HEARTBEAT_SECONDS)
    except Exception as err:  # noqa: BLE001 - XLA raises its own types: say what the user can do about any of them
        raise ConfigError(f"process {cluster.process_id} of {cluster.processes} could not join the run at "
                          f"{cluster.coordinator} ({str(err).splitlines()[0][:160]}); start every process with the same "
                          f"--coordinator and --num-processes, process 0 first") from None


def distribution(kind: str, backend: str, cluster: Cluster | None = None) -> Distribution:
    """The strategy for ``--distribute``; raise a one-line error where the backend cannot do it."""
    if kind not in STRATEGIES:
        raise ConfigError(f"--distribute {kind} is unknown; choose one of {', '.join(STRATEGIES)}")
    if kind == "none":
        return Distribution("none", 1)
    if kind == "multiworker":
        if backend != "jax":
            raise ConfigError("--distribute multiworker runs on the JAX backend (TensorFlow's multi-worker strategy fails "
                              "inside Keras 3); add --backend jax")
        if cluster is None:
            raise ConfigError("--distribute multiworker needs --coordinator HOST:PORT, --num-processes N and --process-id I "
                              "(or start the processes with python -m train.launch)")
        import jax
        import keras

        devices = keras.distribution.list_devices()
        keras.distribution.set_distribution(keras.distribution.DataParallel(devices=devices, auto_shard_dataset=False))
        return Distribution(kind, len(devices), None, jax.process_index(), jax.process_count())
    if backend == "tensorflow":
        import tensorflow as tf

        gpus = tf.config.list_logical_devices("GPU")
        devices = [d.name for d in (gpus or tf.config.list_logical_devices("CPU"))]
        strategy = tf.distribute.MirroredStrategy(devices)
        return Distribution(kind, int(strategy.num_replicas_in_sync), strategy)
    if backend == "jax":
        import jax
        import keras

        devices = jax.devices()
        keras.distribution.set_distribution(keras.distribution.DataParallel(devices=devices))
        return Distribution(kind, len(devices))
    raise ConfigError(f"--distribute {kind} is not available under the {backend} backend; use tensorflow or jax")
