"""Where frames come from: one small interface, one adapter per kind of source.

Every source yields :class:`Frame` (BGR uint8, as the runtime takes it, with the source's timestamp
and frame number) until its end, and raises :class:`SourceError` when it is lost:

    picamera2            the CSI camera on Raspberry Pi OS (libcamera; cv2.VideoCapture cannot open it)
    0, /dev/video0       a V4L2 / USB camera
    clip.mp4             a video file
    rtsp://..., tcp://   a stream (e.g. ``rpicam-vid --listen -o tcp://0.0.0.0:8888``)
    frames/              a folder of images, played in name order
"""

from __future__ import annotations

import importlib
import time
from collections.abc import Iterator
from dataclasses import replace
from pathlib import Path
from typing import Any, Protocol, TypeGuard

import cv2
import numpy as np

from runtime.annotations import IMAGE_SUFFIXES
from runtime.errors import SignkitError
from runtime.stream import Frame

EMPTY_LIMIT = 30  # consecutive empty reads after which a live source counts as lost


class SourceError(SignkitError):
    """A source that cannot be opened, or that stopped delivering frames."""


class Source(Protocol):
    name: str
    live: bool  # a camera or stream: frames come at its pace, and can be lost or dropped
    fps: float | None  # the source's nominal frame rate, if it says

    def read(self) -> Frame | None:
        """The next frame; None at the end of a file or folder. Raises SourceError when the source is lost."""
        ...

    def close(self) -> None: ...


def _check_image(image: Any) -> TypeGuard[np.ndarray]:
    return isinstance(image, np.ndarray) and image.ndim == 3 and image.shape[2] == 3 and image.size > 0


class CaptureSource:
    """cv2.VideoCapture: a V4L2/USB camera, a video file or a network stream."""

    def __init__(self, spec: str, size: tuple[int, int] | None = None, fps: float | None = None) -> None:
        self.name = spec
        target: int | str = int(spec) if spec.isdigit() else spec
        self.live = isinstance(target, int) or spec.startswith("/dev/") or "://" in spec
        if not self.live and not Path(spec).is_file():
            raise SourceError(f"--source {spec}: no such file, folder or camera; pass a video, a folder of images, "
                              f"a camera number (0), /dev/videoN, a stream URL or picamera2")
        self.cap = cv2.VideoCapture(target)
        if not self.cap.isOpened():
            hint = ("check that the camera is plugged in and not used by another program (v4l2-ctl --list-devices); the "
                    "Pi's CSI camera needs --source picamera2" if self.live else "the file is not a video OpenCV can decode")
            raise SourceError(f"--source {spec} cannot be opened: {hint}")
        if self.live and size:
            self.cap.set(cv2.CAP_PROP_FRAME_WIDTH, size[0])
            self.cap.set(cv2.CAP_PROP_FRAME_HEIGHT, size[1])
        if self.live and fps:
            self.cap.set(cv2.CAP_PROP_FPS, fps)
        reported = self.cap.get(cv2.CAP_PROP_FPS)
        self.fps = float(reported) if reported and reported > 0 else None
        self._count = 0
        self._empty = 0
        self._t0 = time.monotonic()

    def read(self) -> Frame | None:
        while True:
            ok, image = self.cap.read()
            if ok and _check_image(image):
                break
            if not self.live:
                return None
            self._empty += 1  # a live source returning nothing: unplugged, or a stream that stalled
            if not ok or self._empty >= EMPTY_LIMIT:
                raise SourceError(f"--source {self.name} stopped delivering frames (unplugged, or the stream ended); "
                                  f"pass --reconnect SECONDS to wait for it")
        self._empty = 0
        if self.live:
            index, stamp = self._count, time.monotonic() - self._t0
        else:
            index = int(self.cap.get(cv2.CAP_PROP_POS_FRAMES)) - 1
            stamp = self.cap.get(cv2.CAP_PROP_POS_MSEC) / 1000.0
        self._count += 1
        return Frame(image, stamp, index)

    def rewind(self) -> None:
        self.cap.set(cv2.CAP_PROP_POS_FRAMES, 0)

    def close(self) -> None:
        self.cap.release()


class FolderSource:
    """The images of a folder in name order. An unreadable file is skipped and listed in ``skipped`` (once, however
    often the folder loops); the frames that are read are numbered without gaps, so a skipped file is not a dropped
    frame."""

    live = False

    def __init__(self, folder: Path, fps: float | None = None) -> None:
        self.name = str(folder)
        self.files = sorted(p for p in Path(folder).iterdir() if p.suffix.lower() in IMAGE_SUFFIXES)
        if not self.files:
            raise SourceError(f"--source {folder} holds no images ({', '.join(IMAGE_SUFFIXES)})")
        self.fps = fps
        self.skipped: list[Path] = []
        self._pos = 0
        self._count = 0

    def read(self) -> Frame | None:
        while self._pos < len(self.files):
            path = self.files[self._pos]
            self._pos += 1
            image = cv2.imread(str(path), cv2.IMREAD_COLOR)
            if _check_image(image):
                self._count += 1
                return Frame(image, (self._count - 1) / (self.fps or 1.0), self._count - 1, path.name)
            if path not in self.skipped:
                self.skipped.append(path)
        return None

    def rewind(self) -> None:
        self._pos = 0
        self._count = 0

    def close(self) -> None:
        pass


class Picamera2Source:
    """The Raspberry Pi's CSI camera through picamera2 (``sudo apt install python3-picamera2``).

    The main stream is configured as RGB888, which libcamera lays out as B, G, R bytes: exactly the
    BGR frame the runtime takes, with no conversion. Each frame is one ``capture_request()``: its
    array is copied out once (``make_array``) and the request released at once, so the camera's
    buffers are never held while the model runs. Nothing is mirrored.
    """

    live = True

    def __init__(self, size: tuple[int, int] | None = None, fps: float | None = None, module: Any = None) -> None:
        self.name = "picamera2"
        if module is None:
            try:
                module = importlib.import_module("picamera2")  # only when chosen: it exists on Raspberry Pi OS alone
            except ImportError as err:
                raise SourceError(
                    f"--source picamera2: picamera2 cannot be imported ({err}); on Raspberry Pi OS: sudo apt install "
                    f"python3-picamera2, and make the venv with --system-site-packages (README: Deploy on a Raspberry Pi)"
                ) from None
        try:
            self.cam = module.Picamera2()
            controls = {"FrameRate": float(fps)} if fps else {}
            config = self.cam.create_video_configuration(main={"size": tuple(size or (1280, 720)), "format": "RGB888"},
                                                         controls=controls, buffer_count=4)
            self.cam.configure(config)
            self.cam.start()
        except Exception as err:  # noqa: BLE001 - libcamera raises RuntimeError, IndexError (no camera) and more
            raise SourceError(f"--source picamera2: the camera cannot be started ({err}); check the ribbon cable and "
                              f"that no other program (rpicam-*) uses it") from None
        self.fps = fps
        self._count = 0
        self._first_ns: int | None = None
        self._frame_ns: float | None = None

    def read(self) -> Frame | None:
        try:
            request = self.cam.capture_request()
        except Exception as err:  # noqa: BLE001 - see above
            raise SourceError(f"--source picamera2 stopped delivering frames ({err}); pass --reconnect SECONDS") from None
        try:
            image = request.make_array("main")
            meta = request.get_metadata()
        finally:
            request.release()
        if not _check_image(image):
            raise SourceError("--source picamera2 returned an empty frame; check the camera configuration (--size)")
        sensor_ns = int(meta.get("SensorTimestamp", time.monotonic_ns()))
        if self._first_ns is None:
            self._first_ns = sensor_ns
        if meta.get("FrameDuration"):
            self._frame_ns = float(meta["FrameDuration"]) * 1000.0  # microseconds
        # The sensor's clock numbers the frames: a gap of k frame times means k - 1 frames were dropped.
        index = round((sensor_ns - self._first_ns) / self._frame_ns) if self._frame_ns else self._count
        self._count += 1
        return Frame(image, (sensor_ns - self._first_ns) / 1e9, int(index))

    def close(self) -> None:
        try:
            self.cam.stop()
            self.cam.close()
        except Exception:  # noqa: BLE001, S110 - closing a camera that already failed must not hide the first error
            pass


def open_source(spec: str, *, size: tuple[int, int] | None = None, fps: float | None = None) -> Source:
    """The source a ``--source`` string names.

    Raises:
        SourceError: nothing of that name, or it cannot be opened (the message says how to fix it).
    """
    if spec == "picamera2":
        return Picamera2Source(size, fps)
    if Path(spec).is_dir():
        return FolderSource(Path(spec), fps)
    return CaptureSource(spec, size, fps)


class Reconnecting:
    """A live source that is reopened when it is lost, for up to ``seconds`` each time (``--reconnect``)."""

    def __init__(self, opener: Any, seconds: float, log: Any = None) -> None:
        self.opener, self.seconds, self.log = opener, seconds, log
        self.source: Source = opener()
        self.name, self.live, self.fps = self.source.name, self.source.live, self.source.fps
        self.reconnects = 0

    def read(self) -> Frame | None:
        try:
            return self.source.read()
        except SourceError as lost:
            self.source.close()
            deadline = time.monotonic() + self.seconds
            if self.log:
                self.log(f"{lost}; reconnecting for up to {self.seconds:g} s")
            while time.monotonic() < deadline:
                try:
                    self.source = self.opener()
                    self.reconnects += 1
                    return self.source.read()
                except SourceError:
                    time.sleep(min(1.0, max(0.0, deadline - time.monotonic())))
            raise SourceError(f"{lost.args[0].split(';')[0]}; no frames again after {self.seconds:g} s of --reconnect") from None

    def close(self) -> None:
        self.source.close()


def frames(source: Source, *, loop: bool = False) -> Iterator[Frame]:
    """Every frame of ``source``; with ``loop`` a file or folder starts again at its end (frame numbers go on)."""
    offset = 0
    while True:
        last = -1
        while (frame := source.read()) is not None:
            last = frame.index
            yield replace(frame, index=frame.index + offset) if offset else frame
        if not loop or source.live or last < 0:
            return
        rewind = getattr(source, "rewind", None)
        if rewind is None:
            return
        rewind()
        offset += last + 1
