"""Watch a headless demo from a browser: the annotated frames as an MJPEG stream, and the latest detections.

    /                 a page with the live stream and a table of the latest detections
    /stream.mjpg      multipart/x-mixed-replace JPEG frames
    /frame.jpg        the latest frame
    /detections.json  the latest frame's detections

Standard library only (``http.server``). Frames are JPEG-encoded in the server's threads, only
while someone is watching, so an unwatched ``--serve`` costs the demo nothing. A device left running
for weeks meets idle browser tabs and port scans: a connection that sends no request, or stops
reading, is closed after ``IDLE_SECONDS``; at most ``MAX_CONNECTIONS`` are served at once and
``MAX_STREAMS`` of them streams, the rest get a 503 at once.
"""

from __future__ import annotations

import errno
import json
import socket
import threading
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from typing import Any

import cv2
import numpy as np

from runtime.errors import ConfigError

BOUNDARY = "signkitframe"
IDLE_SECONDS = 10.0  # a request not sent, or a frame not read, within this: the connection is closed
MAX_CONNECTIONS = 16  # each holds a thread of a Pi's few
MAX_STREAMS = 4  # each encodes and sends every frame
PAGE = """<!doctype html>
<html lang="en"><head><meta charset="utf-8"><title>signkit camera demo</title>
<style>body{font:15px system-ui,sans-serif;margin:1em;background:#111;color:#eee}img{max-width:100%;border:1px solid #444}
table{border-collapse:collapse;margin-top:.6em}td,th{padding:.2em .8em;border-bottom:1px solid #333;text-align:left}</style>
</head><body><h1>signkit camera demo</h1>
<img id="stream" src="/stream.mjpg" alt="annotated camera frames">
<p id="info">waiting for frames...</p>
<table id="dets"><thead><tr><th>sign</th><th>score</th><th>box</th><th>track</th></tr></thead><tbody></tbody></table>
<script>
async function poll(){
  try{
    const r = await fetch('/detections.json', {cache:'no-store'}); const d = await r.json();
    document.getElementById('info').textContent = 'frame ' + d.frame + ', ' + d.fps.toFixed(1) + ' fps';
    const body = document.querySelector('#dets tbody'); body.innerHTML = '';
    for (const x of d.detections){ const tr = document.createElement('tr');
      for (const v of [x.label, x.score.toFixed(2), x.box.join(', '), x.track]){ const td = document.createElement('td'); td.textContent = v; tr.appendChild(td); }
      body.appendChild(tr); }
  } catch(e) {}
  setTimeout(poll, 500);
}
poll();
</script></body></html>
"""


class FrameBoard:
    """The latest annotated frame and its detections, shared between the demo loop and the server threads."""

    def __init__(self) -> None:
        self._cond = threading.Condition()
        self._image: np.ndarray | None = None
        self._jpeg: bytes | None = None
        self._seq = 0
        self.info: dict[str, Any] = {"frame": -1, "fps": 0.0, "detections": []}
        self.closed = False

    def publish(self, image: np.ndarray, info: dict[str, Any]) -> None:
        with self._cond:
            self._image, self._jpeg, self.info = image, None, info
            self._seq += 1
            self._cond.notify_all()

    def close(self) -> None:
        with self._cond:
            self.closed = True
            self._cond.notify_all()

    def wait_jpeg(self, after: int, timeout: float = 5.0) -> tuple[int, bytes | None]:
        """The next frame after sequence number ``after``, JPEG-encoded (once, by the first viewer who asks)."""
        with self._cond:
            self._cond.wait_for(lambda: self._seq > after or self.closed, timeout)
            seq, image, jpeg = self._seq, self._image, self._jpeg
        if jpeg is None and image is not None:
            ok, buf = cv2.imencode(".jpg", image, [cv2.IMWRITE_JPEG_QUALITY, 80])
            jpeg = buf.tobytes() if ok else None
            with self._cond:
                if self._seq == seq:
                    self._jpeg = jpeg
        return seq, jpeg


def _handler(board: FrameBoard, streams: threading.BoundedSemaphore) -> type[BaseHTTPRequestHandler]:
    class Handler(BaseHTTPRequestHandler):
        timeout = IDLE_SECONDS  # applied to the socket: reads and writes

        def log_message(self, format: str, *args: Any) -> None:
            pass

        def _send(self, body: bytes, ctype: str) -> None:
            self.send_response(200)
            self.send_header("Content-Type", ctype)
            self.send_header("Content-Length", str(len(body)))
            self.send_header("Cache-Control", "no-store")
            self.end_headers()
            self.wfile.write(body)

        def do_GET(self) -> None:
            path = self.path.split("?")[0]
            if path in ("/", "/index.html"):
                self._send(PAGE.encode(), "text/html; charset=utf-8")
            elif path == "/detections.json":
                self._send(json.dumps(board.info).encode(), "application/json")
            elif path == "/frame.jpg":
                _, jpeg = board.wait_jpeg(0)  # the latest frame, or the first one to come
                if jpeg is None:
                    self.send_error(503, "no frame yet")
                else:
                    self._send(jpeg, "image/jpeg")
            elif path == "/stream.mjpg":
                if not streams.acquire(blocking=False):
                    self.send_error(503, f"too many viewers (at most {MAX_STREAMS}); close another stream and reload")
                    return
                try:
                    self._stream()
                finally:
                    streams.release()
            else:
                self.send_error(404)

        def _stream(self) -> None:
            self.send_response(200)
            self.send_header("Content-Type", f"multipart/x-mixed-replace; boundary={BOUNDARY}")
            self.send_header("Cache-Control", "no-store")
            self.end_headers()
            seq = 0
            try:
                while not board.closed:
                    seq, jpeg = board.wait_jpeg(seq)
                    if jpeg is None:
                        continue
                    self.wfile.write(f"--{BOUNDARY}\r\nContent-Type: image/jpeg\r\nContent-Length: {len(jpeg)}\r\n\r\n".encode())
                    self.wfile.write(jpeg + b"\r\n")
            except (BrokenPipeError, ConnectionResetError, TimeoutError):
                pass  # the viewer went away, or stopped reading

    return Handler


class _BoundedServer(ThreadingHTTPServer):
    """A thread per connection, up to ``MAX_CONNECTIONS``; one more is answered 503 and closed at once."""

    daemon_threads = True
    request_queue_size = 64  # connections waiting to be accepted: each is then served or refused at once

    def __init__(self, address: tuple[str, int], handler: type[BaseHTTPRequestHandler]) -> None:
        super().__init__(address, handler)
        self._slots = threading.BoundedSemaphore(MAX_CONNECTIONS)

    def process_request(self, request: Any, client_address: Any) -> None:
        if not self._slots.acquire(blocking=False):
            try:
                request.sendall(b"HTTP/1.0 503 Service Unavailable\r\nContent-Length: 0\r\nConnection: close\r\n\r\n")
            except OSError:
                pass
            self.shutdown_request(request)
            return
        super().process_request(request, client_address)

    def process_request_thread(self, request: Any, client_address: Any) -> None:
        try:
            super().process_request_thread(request, client_address)
        finally:
            self._slots.release()


class MjpegServer:
    """``http.server`` on its own daemon thread, serving a FrameBoard."""

    def __init__(self, board: FrameBoard, port: int, host: str = "127.0.0.1") -> None:
        try:
            self.httpd = _BoundedServer((host, port), _handler(board, threading.BoundedSemaphore(MAX_STREAMS)))
        except (socket.gaierror, OverflowError) as err:
            raise ConfigError(f"--serve-host {host} / --serve {port}: not an address and port to listen on ({err}); pass an "
                              f"address of this machine (127.0.0.1, 0.0.0.0) and a port of 1024-65535") from None
        except OSError as err:
            if err.errno in (errno.EADDRINUSE, errno.EACCES):
                raise ConfigError(f"--serve {port}: cannot listen on {host}:{port} ({err.strerror}); choose another "
                                  f"port") from None
            raise ConfigError(f"--serve-host {host}: cannot listen there ({err.strerror}); pass an address of this "
                              f"machine (127.0.0.1, or 0.0.0.0 for every network)") from None
        self.board = board
        self.port = self.httpd.server_address[1]
        self.host = host
        self.thread = threading.Thread(target=self.httpd.serve_forever, name="mjpeg-server", daemon=True)
        self.thread.start()

    @property
    def url(self) -> str:
        return f"http://{'localhost' if self.host in ('127.0.0.1', '0.0.0.0') else self.host}:{self.port}/"

    def close(self) -> None:
        self.board.close()
        self.httpd.shutdown()
        self.httpd.server_close()
