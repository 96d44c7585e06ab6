"""runtime/ and camera_demo/ must import on a Pi without TensorFlow or Keras, and without train/, export/ or bench/."""

from __future__ import annotations

import subprocess
import sys

from tests.fixtures import REPO

BLOCKER = """
import importlib, sys
class Block:
    def find_spec(self, name, path=None, target=None):
        if name.split(".")[0] in ("tensorflow", "keras", "tf_keras", "tf2onnx", "jax", "torch"):
            raise ImportError("blocked: " + name)
sys.meta_path.insert(0, Block())
import pkgutil
pkg = importlib.import_module(sys.argv[1])
for mod in pkgutil.walk_packages(pkg.__path__, sys.argv[1] + "."):
    importlib.import_module(mod.name)
heavy = sorted(m for m in sys.modules if m.split(".")[0] in ("tensorflow", "keras", "matplotlib", "tqdm",
                                                             "train", "export", "bench"))
print("loaded-heavy:", heavy)
"""


def _import_without_tf(package: str) -> str:
    proc = subprocess.run([sys.executable, "-c", BLOCKER, package], cwd=REPO, check=False, capture_output=True, text=True, timeout=120)
    assert proc.returncode == 0, proc.stderr
    return proc.stdout


def test_runtime_imports_every_module_without_tensorflow():
    assert "loaded-heavy: []" in _import_without_tf("runtime")


def test_camera_demo_imports_without_tensorflow():
    assert "loaded-heavy: []" in _import_without_tf("camera_demo")


def test_the_runtime_extras_bench_commands_import_without_the_train_extra():
    """bench.gtsdb, bench.misses and bench.drive are listed for the runtime extra: they need no TensorFlow, Keras,
    matplotlib or tqdm, nor anything of train/ or export/."""
    code = BLOCKER.split("import pkgutil")[0] + (
        "import importlib\n"
        "for name in ('bench.gtsdb', 'bench.misses', 'bench.drive', 'bench.soak'):\n"
        "    importlib.import_module(name)\n"
        "heavy = sorted(m for m in sys.modules if m.split('.')[0] in ('tensorflow', 'keras', 'matplotlib', 'tqdm', 'train', "
        "'export'))\n"
        "print('loaded-heavy:', heavy)\n")
    proc = subprocess.run([sys.executable, "-c", code], cwd=REPO, check=False, capture_output=True, text=True, timeout=120)
    assert proc.returncode == 0, proc.stderr
    assert "loaded-heavy: []" in proc.stdout


def test_signkit_lists_the_runtime_extras_commands_as_such():
    from runtime.commands import COMMANDS

    light = {c.module for c in COMMANDS if c.extra == "runtime"}
    assert light == {"bench.gtsdb", "bench.misses", "bench.drive", "bench.soak", "camera_demo"}
