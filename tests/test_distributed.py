"""Training past one device, proven end to end: mirrored on one machine, and several processes on 127.0.0.1."""

from __future__ import annotations

import json
import os
import signal
import subprocess
import sys
import time
from pathlib import Path

import pytest

from tests import synth
from tests.fixtures import REPO
from train.__main__ import main as train_main
from train.runs import Run

pytestmark = pytest.mark.slow
TINY = ["--epochs", "2", "--img-size", "16", "--val-fraction", "0.2", "--quiet"]


@pytest.fixture(scope="module")
def tiny(tmp_path_factory: pytest.TempPathFactory) -> Path:
    """4 classes of 10 tracks: 120 training images after 2 tracks a class are held out, 15 global batches of 8."""
    return synth.write_kaggle(tmp_path_factory.mktemp("dist_data"), num_classes=4, tracks_per_class=10, frames=4, seed=3)


def _train(args: list[str], env: dict[str, str] | None = None, timeout: int = 600) -> subprocess.CompletedProcess:
    return subprocess.run([sys.executable, "-m", *args], cwd=REPO, env={**os.environ, **(env or {})}, capture_output=True,
                          text=True, timeout=timeout, check=False)


def _processes_of(out: Path, process_id: str) -> list[int]:
    """The pids whose command line trains into ``out`` as ``--process-id process_id``."""
    found = []
    for proc in Path("/proc").iterdir():
        try:
            argv = (proc / "cmdline").read_bytes().split(b"\0")
        except OSError:
            continue
        args = [a.decode(errors="replace") for a in argv]
        if str(out) in args and "--process-id" in args and args[args.index("--process-id") + 1] == process_id:
            found.append(int(proc.name))
    return found


def test_mirrored_on_two_logical_cpus_is_an_ordinary_run(tiny, tmp_path):
    out = tmp_path / "mirrored"
    proc = _train(["train", "--data", str(tiny), "--distribute", "mirrored", "--batch-size", "4", "--out", str(out), *TINY],
                  {"SIGNKIT_LOGICAL_CPUS": "2"})
    assert proc.returncode == 0, proc.stderr[-3000:]
    assert "mirrored over 2 replicas (batch 8" in proc.stderr
    meta = json.loads((out / "metadata.json").read_text())
    assert meta["distribution"] == {"strategy": "mirrored", "replicas": 2, "processes": 1, "global_batch": 8,
                                    "lr": pytest.approx(2 * 2e-3)}
    assert Run.open(out).load_model().output_shape == (None, 4)


def test_mirrored_under_jax_on_two_host_devices(tiny, tmp_path):
    out = tmp_path / "jax-mirrored"
    proc = _train(["train", "--data", str(tiny), "--backend", "jax", "--distribute", "mirrored", "--batch-size", "4",
                   "--out", str(out), *TINY], {"XLA_FLAGS": "--xla_force_host_platform_device_count=2"})
    assert proc.returncode == 0, proc.stderr[-3000:]
    meta = json.loads((out / "metadata.json").read_text())
    assert meta["distribution"]["replicas"] == 2 and meta["distribution"]["global_batch"] == 8
    assert Run.open(out).load_model().output_shape == (None, 4)


def test_two_processes_on_loopback_train_the_same_model_as_one(tiny, tmp_path):
    """The README's launch line, on tiny data. Two processes of 4 crops each and one process of 8 see the same global
    batches, augmented alike (the augmentation is drawn per global batch), from the same initial weights: their losses
    differ only by float32 summation order (measured: 1e-6 relative after two epochs), so 1e-4 is the tolerance."""
    two, one = tmp_path / "two", tmp_path / "one"
    proc = _train(["train.launch", "--workers", "2", "--", "--data", str(tiny), "--batch-size", "4", "--out", str(two), *TINY])
    assert proc.returncode == 0, (proc.stdout + proc.stderr)[-3000:]
    assert "[process 1] process 1 of 2: done" in proc.stdout
    meta = json.loads((two / "metadata.json").read_text())
    assert meta["distribution"] == {"strategy": "multiworker", "replicas": 2, "processes": 2, "global_batch": 8,
                                    "lr": pytest.approx(2 * 2e-3)}
    assert sorted(p.name for p in tmp_path.iterdir()) == ["two"]  # one run folder; process 1 wrote nowhere else here
    assert Run.open(two).load_model().output_shape == (None, 4)
    single = _train(["train", "--data", str(tiny), "--backend", "jax", "--batch-size", "8", "--lr", str(meta["distribution"]["lr"]),
                     "--out", str(one), *TINY])
    assert single.returncode == 0, single.stderr[-3000:]
    a, b = (json.loads((run / "history.json").read_text()) for run in (two, one))
    for key in ("loss", "val_loss"):
        assert a[key] == pytest.approx(b[key], rel=1e-4), key


def test_a_killed_process_stops_the_other_in_one_line_and_resume_goes_on(tiny, tmp_path):
    out = tmp_path / "run"
    args = [sys.executable, "-m", "train.launch", "--workers", "2", "--", "--data", str(tiny), "--batch-size", "4",
            "--epochs", "30", "--img-size", "16", "--val-fraction", "0.2", "--quiet", "--out", str(out)]
    env = {**os.environ, "SIGNKIT_HEARTBEAT_SECONDS": "5"}
    launcher = subprocess.Popen(args, cwd=REPO, env=env, stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True)
    state = out / "checkpoints" / "state.json"
    deadline = time.time() + 300
    while time.time() < deadline and not (state.is_file() and json.loads(state.read_text())["epoch"] >= 2):
        time.sleep(0.5)
    assert state.is_file(), "no epoch finished"
    child = max(_processes_of(out, "1"))  # the training process itself: started after the process that watches it
    os.kill(child, signal.SIGKILL)
    killed = time.time()
    stdout, stderr = launcher.communicate(timeout=120)
    took = time.time() - killed
    assert launcher.returncode == 1 and took < 60, (took, stderr[-2000:])
    lines = [line for line in (stdout + stderr).splitlines() if "error:" in line]
    assert any("process 0 of 2 stopped: another process of the run stopped" in line and "--resume" in line for line in lines)
    assert "Traceback" not in stdout + stderr and "Check failure" not in stdout + stderr
    finished = json.loads(state.read_text())["epoch"]

    resumed = _train(["train.launch", "--workers", "2", "--", "--resume", "--out", str(out), "--epochs", str(finished + 2),
                      "--quiet"], {"SIGNKIT_HEARTBEAT_SECONDS": "5"})
    assert resumed.returncode == 0, (resumed.stdout + resumed.stderr)[-3000:]
    assert f"resuming {out} from epoch {finished}" in resumed.stderr
    history = json.loads((out / "history.json").read_text())
    assert len(history["loss"]) == finished + 2 and json.loads((out / "metadata.json").read_text())["distribution"]["processes"] == 2


def test_what_cannot_run_is_refused_in_one_line(tiny, tmp_path, capsys, monkeypatch):
    monkeypatch.setenv("SIGNKIT_WORKER", "1")  # the training process itself, as the supervising parent starts it
    monkeypatch.setenv("KERAS_BACKEND", os.environ.get("KERAS_BACKEND", "tensorflow"))  # --backend jax sets it: restored after
    assert train_main(["--data", str(tiny), "--distribute", "multiworker", "--out", str(tmp_path / "r"), *TINY]) == 1
    err = capsys.readouterr().err
    assert "runs on the JAX backend" in err and "--backend jax" in err and "Traceback" not in err
    assert train_main(["--data", str(tiny), "--backend", "jax", "--distribute", "multiworker", "--out", str(tmp_path / "r"),
                       *TINY]) == 1
    assert "needs --coordinator HOST:PORT" in capsys.readouterr().err
    assert train_main(["--data", str(tiny), "--backend", "jax", "--distribute", "multiworker", "--coordinator", "nohost",
                       "--num-processes", "2", "--out", str(tmp_path / "r"), *TINY]) == 1
    assert "is not HOST:PORT" in capsys.readouterr().err
    assert not (tmp_path / "r").exists()
