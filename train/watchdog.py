"""A training that stops making progress says so and exits, rather than hanging unattended.

TensorFlow can deadlock between two epochs while it deletes the previous epoch's input iterator
(Keras feeds our PyDataset through tf.data's ``from_generator``; a known class of teardown hangs,
seen once in this project: 0 % CPU, the main thread waiting in the iterator's destructor for a
tf.data thread that never finishes). The finished epoch is checkpointed by then, so the cure is
``python -m train --resume``. This watch turns the silent hang into that message and exit status
``STALL_EXIT``, which run.sh answers by resuming.

Progress is any finished training or validation batch or epoch. A process that was suspended
(SIGSTOP, a laptop's lid) is not stalled: a poll that comes far later than due restarts the clock.
"""

from __future__ import annotations

import os
import sys
import threading
import time
from collections.abc import Callable
from pathlib import Path
from typing import Any

STALL_EXIT = 75  # EX_TEMPFAIL (sysexits.h): a temporary failure, try again (with --resume)


class StallWatch:
    """Calls ``on_stall(seconds idle)`` once if ``progress()`` is not called for ``minutes``; a daemon thread.

    ``start()`` it before the work, call ``progress()`` whenever a step finishes, ``stop()`` it after
    (in a ``finally``). ``minutes`` <= 0 watches nothing.
    """

    def __init__(self, minutes: float, on_stall: Callable[[float], None], *, poll_s: float | None = None,
                 clock: Callable[[], float] = time.monotonic) -> None:
        self.limit = minutes * 60.0
        self.poll = poll_s if poll_s is not None else min(30.0, max(self.limit / 10, 0.01))
        self.on_stall = on_stall
        self.clock = clock
        self.last = self._polled = clock()
        self.fired = False
        self._stop = threading.Event()
        self._thread: threading.Thread | None = None

    def progress(self) -> None:
        self.last = self.clock()

    def start(self) -> StallWatch:
        if self.limit > 0:
            self.last = self._polled = self.clock()
            self._thread = threading.Thread(target=self._watch, name="signkit-stall-watch", daemon=True)
            self._thread.start()
        return self

    def stop(self) -> None:
        self._stop.set()
        if self._thread is not None:
            self._thread.join()

    def _watch(self) -> None:
        while not self._stop.wait(self.poll):
            if self.check(self.clock()):
                return

    def check(self, now: float) -> bool:
        """One poll at ``now``: True, with ``on_stall`` called, if nothing progressed for ``minutes``."""
        if now - self._polled > 3 * self.poll:  # this process was suspended: its idle time is not a stall
            self.last = now
        self._polled = now
        if now - self.last >= self.limit:
            self.fired = True
            self.on_stall(now - self.last)
            return True
        return False


def exit_stalled(out: Path, minutes: float) -> Callable[[float], None]:
    """The training CLI's answer to a stall: one line naming the cure, then exit ``STALL_EXIT`` at once.

    ``os._exit``: the main thread is stuck inside TensorFlow, so neither an exception nor ``sys.exit``
    would ever reach it. The run folder's lock is the kernel's (flock) and goes with the process.
    """

    def stalled(idle_s: float) -> None:
        print(f"python -m train: no training progress for {idle_s / 60:.0f} minutes (--stall-minutes {minutes:g}), "
              f"most likely TensorFlow's input pipeline deadlocked between two epochs; every finished epoch is "
              f"checkpointed: continue with python -m train --resume --out {out}", file=sys.stderr, flush=True)
        sys.stdout.flush()
        os._exit(STALL_EXIT)

    return stalled


def progress_callback(keras: Any, watch: StallWatch) -> Any:
    """A Keras callback that tells ``watch`` about every finished batch (training or validation) and epoch."""

    class Progress(keras.callbacks.Callback):
        def on_train_batch_end(self, batch: int, logs: dict | None = None) -> None:
            watch.progress()

        def on_test_batch_end(self, batch: int, logs: dict | None = None) -> None:
            watch.progress()

        def on_epoch_begin(self, epoch: int, logs: dict | None = None) -> None:
            watch.progress()

        def on_epoch_end(self, epoch: int, logs: dict | None = None) -> None:
            watch.progress()

    return Progress()
