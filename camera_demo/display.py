"""A window where one can be shown; headless (and why) where it cannot."""

from __future__ import annotations

import os
from typing import Any

import cv2
import numpy as np

WINDOW = "signkit camera demo"


def window_unavailable() -> str | None:
    """Why no window can be opened here, or None if one can."""
    if not (os.environ.get("DISPLAY") or os.environ.get("WAYLAND_DISPLAY")):
        return "no display (DISPLAY is not set)"
    gui = [line for line in cv2.getBuildInformation().splitlines() if line.strip().startswith("GUI:")]
    if gui and gui[0].split(":", 1)[1].strip().upper() == "NONE":
        return ("this OpenCV has no GUI (opencv-python-headless has no imshow): on the Pi use apt's python3-opencv "
                "(README: Deploy on a Raspberry Pi), or watch in a browser with --serve PORT")
    return None


class Window:
    """An OpenCV window; ``show`` returns False once the user pressed q or Esc or closed it."""

    def __init__(self) -> None:
        cv2.namedWindow(WINDOW, cv2.WINDOW_NORMAL)
        self._shown = False

    def show(self, image: np.ndarray) -> bool:
        cv2.imshow(WINDOW, image)
        self._shown = True
        key = cv2.waitKey(1) & 0xFF
        if key in (ord("q"), 27):
            return False
        visible: Any = cv2.getWindowProperty(WINDOW, cv2.WND_PROP_VISIBLE)
        return not (self._shown and visible is not None and visible < 1)

    def close(self) -> None:
        cv2.destroyWindow(WINDOW)
