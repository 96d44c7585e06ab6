"""The code stays clean: ruff over everything, mypy over every package (the Pi's runtime/ included)."""

from __future__ import annotations

import subprocess
import sys

import pytest

from tests.fixtures import REPO

pytestmark = pytest.mark.lint


@pytest.mark.parametrize("tool", [["ruff", "check", "."], ["mypy"]], ids=["ruff", "mypy"])
def test_clean(tool):
    proc = subprocess.run([sys.executable, "-m", *tool], cwd=REPO, check=False, capture_output=True, text=True, timeout=600)
    assert proc.returncode == 0, (proc.stdout + proc.stderr)[-4000:]
