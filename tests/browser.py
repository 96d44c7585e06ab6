"""A real headless browser (Debian's chromium) for the HTML pages signkit writes; tests skip when there is none.

.ci/run installs it (apt-get install chromium). The pages mark themselves once loaded: the body's
``data-images-loaded`` counts the images with a natural width, beside ``data-images-total``.
"""

from __future__ import annotations

import re
import shutil
import subprocess
import tempfile
from pathlib import Path

import pytest

FLAGS = ["--headless", "--no-sandbox", "--disable-gpu", "--disable-quic", "--no-first-run", "--disable-background-networking",
         "--disable-component-update", "--disable-sync", "--hide-scrollbars"]


def chromium() -> str:
    exe = shutil.which("chromium") or shutil.which("chromium-browser") or shutil.which("google-chrome")
    if exe is None:
        pytest.skip("no headless browser (sudo apt-get install chromium); .ci/run installs one")
    return exe


def _run(args: list[str], timeout: float) -> str:
    with tempfile.TemporaryDirectory(prefix="signkit-chromium-") as profile:
        proc = subprocess.run([chromium(), *FLAGS, f"--user-data-dir={profile}", *args], check=False, capture_output=True,
                              text=True, timeout=timeout)
    assert proc.returncode == 0, proc.stderr[-2000:]
    return proc.stdout


def rendered_dom(page: Path, timeout: float = 120) -> str:
    """The page's DOM after its scripts ran (and its images loaded)."""
    return _run(["--virtual-time-budget=10000", "--dump-dom", page.resolve().as_uri()], timeout)


def screenshot(page: Path, png: Path, size: tuple[int, int] = (1400, 2600), timeout: float = 120) -> Path:
    _run(["--virtual-time-budget=10000", f"--window-size={size[0]},{size[1]}", f"--screenshot={png}", page.resolve().as_uri()],
         timeout)
    return png


def images_loaded(dom: str) -> tuple[int, int]:
    """(images loaded, images on the page) as the page counted them."""
    loaded = re.search(r'data-images-loaded="(\d+)"', dom)
    total = re.search(r'data-images-total="(\d+)"', dom)
    assert loaded and total, "the page did not run its load script"
    return int(loaded.group(1)), int(total.group(1))
