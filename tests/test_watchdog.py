"""A training that stops making progress exits with a message and status 75, and run.sh resumes it."""

from __future__ import annotations

import subprocess
import sys
import time
from pathlib import Path

import pytest

from tests.fixtures import REPO
from train import __main__ as train_cli
from train.config import TrainConfig, resume_config, to_json
from train.watchdog import STALL_EXIT, StallWatch


def _wait_for(predicate, seconds: float = 5.0) -> bool:
    end = time.monotonic() + seconds
    while time.monotonic() < end:
        if predicate():
            return True
        time.sleep(0.01)
    return predicate()


def test_no_progress_fires_once_with_the_idle_time():
    calls: list[float] = []
    watch = StallWatch(0.1 / 60, calls.append, poll_s=0.01).start()  # 0.1 s without progress
    try:
        assert _wait_for(lambda: watch.fired)
        time.sleep(0.1)
    finally:
        watch.stop()
    assert len(calls) == 1 and calls[0] >= 0.1


def test_progress_restarts_the_clock():
    calls: list[float] = []
    now = [0.0]
    watch = StallWatch(1.0, calls.append, poll_s=10.0, clock=lambda: now[0])  # polled by hand: check(now)
    for t in range(10, 200, 10):  # a batch finishes every 10 s: never 60 s idle
        now[0] = t
        watch.progress()
        assert not watch.check(t)
    assert not any(watch.check(t) for t in (200, 210, 220, 230, 240))
    assert watch.check(250)  # the last progress was at 190
    assert calls == [60.0]


def test_a_suspended_process_is_not_stalled():
    """After SIGSTOP/SIGCONT the clock has jumped far past the limit between two polls: that restarts it."""
    calls: list[float] = []
    watch = StallWatch(1.0, calls.append, poll_s=10.0, clock=lambda: 0.0)
    assert not any(watch.check(t) for t in (10, 20, 30, 40, 50))
    assert not watch.check(3650)  # an hour suspended, seen as one late poll
    assert not any(watch.check(t) for t in (3660, 3670, 3680, 3690, 3700))
    assert watch.check(3710) and calls == [60.0]  # standing still after it, poll by poll, is a stall


def test_zero_minutes_watches_nothing():
    watch = StallWatch(0, lambda s: None).start()
    assert watch._thread is None
    watch.stop()


def test_a_stall_exits_75_with_the_resume_command(tmp_path):
    code = ("import time; from pathlib import Path; from train.watchdog import StallWatch, exit_stalled\n"
            "StallWatch(0.001, exit_stalled(Path('runs/x'), 0.001), poll_s=0.01).start()\n"
            "time.sleep(30)\n")
    proc = subprocess.run([sys.executable, "-c", code], cwd=REPO, capture_output=True, text=True, timeout=60, check=False)
    assert proc.returncode == STALL_EXIT
    lines = proc.stderr.strip().splitlines()
    assert len(lines) == 1 and "python -m train --resume --out runs/x" in lines[0] and "--stall-minutes 0.001" in lines[0]


def test_stall_minutes_must_not_be_negative(capsys):
    with pytest.raises(SystemExit) as e:
        train_cli.main(["--data", "x", "--stall-minutes", "-1"])
    assert e.value.code == 2 and "--stall-minutes" in capsys.readouterr().err


def test_a_resumed_run_may_change_stall_minutes(tmp_path):
    recorded = to_json(TrainConfig(data=tmp_path, out=tmp_path / "run"))
    cfg = resume_config(recorded, tmp_path / "run", {"stall_minutes": 5.0})
    assert cfg.stall_minutes == 5.0 and cfg.resume


def _run_sh_train_model(tmp_path: Path, stalls: int, final: int) -> tuple[int, list[str]]:
    """run.sh's own train_model function, with a fake Python that stalls ``stalls`` times, then exits ``final``."""
    run_sh = (REPO / "run.sh").read_text()
    func = run_sh[run_sh.index("train_model() {"):]
    func = func[:func.index("\n}\n") + 3]
    fake = tmp_path / "python"
    fake.write_text(f'#!/usr/bin/env bash\necho "$*" >> {tmp_path}/calls\n'
                    f'n=$(wc -l < {tmp_path}/calls)\n'
                    f'if [ "$n" -le {stalls} ]; then exit 75; fi\nexit {final}\n')
    fake.chmod(0o755)
    script = f"set -euo pipefail\nPYBIN={fake}\nRUN=runs/r\n{func}\ntrain_model runs/r --data d --epochs 3\n"
    proc = subprocess.run(["bash", "-c", script], capture_output=True, text=True, timeout=60, check=False)
    calls = (tmp_path / "calls").read_text().splitlines()
    return proc.returncode, calls


def test_run_sh_resumes_a_stalled_training_twice_at_most(tmp_path):
    rc, calls = _run_sh_train_model(tmp_path, stalls=1, final=0)
    assert rc == 0 and calls == ["-m train --out runs/r --data d --epochs 3", "-m train --resume --out runs/r"]
    (tmp_path / "calls").unlink()
    rc, calls = _run_sh_train_model(tmp_path, stalls=9, final=0)
    assert rc == STALL_EXIT and len(calls) == 3
    (tmp_path / "calls").unlink()
    rc, calls = _run_sh_train_model(tmp_path, stalls=0, final=1)  # another failure is not retried
    assert rc == 1 and len(calls) == 1


def test_the_keras_callback_reports_every_batch_and_epoch():
    keras = pytest.importorskip("keras")
    import numpy as np

    from train.watchdog import progress_callback

    class Counting(StallWatch):
        calls = 0

        def progress(self) -> None:
            Counting.calls += 1

    model = keras.Sequential([keras.Input((2,)), keras.layers.Dense(1)])
    model.compile(optimizer="sgd", loss="mse")
    x, y = np.zeros((8, 2), np.float32), np.zeros((8, 1), np.float32)
    model.fit(x, y, batch_size=4, epochs=2, validation_data=(x, y), verbose=0,
              callbacks=[progress_callback(keras, Counting(1.0, lambda s: None))])
    assert Counting.calls == 2 * (2 + 2 + 2)  # per epoch: 2 training batches, 2 validation batches, its begin and end


def test_the_sweep_resumes_a_stalled_training(tmp_path):
    from bench import sweep
    from runtime.errors import ConfigError

    stall = [sys.executable, "-c", f"import sys; print('stalled'); sys.exit({STALL_EXIT})"]
    done = [sys.executable, "-c", "print('resumed')"]
    log = tmp_path / "a.log"
    sweep._run(stall, log, resume=done)
    assert log.read_text().count("$ ") == 2 and "resumed" in log.read_text()
    with pytest.raises(ConfigError, match="exit 75"):
        sweep._run(stall, tmp_path / "b.log", resume=stall)  # stalls every time: three tries, then the error
    assert (tmp_path / "b.log").read_text().splitlines().count("stalled") == 3
    with pytest.raises(ConfigError, match="exit 75"):
        sweep._run(stall, tmp_path / "c.log")  # nothing to resume with: not retried
    assert (tmp_path / "c.log").read_text().splitlines().count("stalled") == 1
