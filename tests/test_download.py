"""train.download against a local http.server serving fixture archives: verify, resume, reject."""

from __future__ import annotations

import hashlib
import http.server
import tarfile
import threading
from functools import partial
from pathlib import Path

import pytest

from tests import synth
from train import download as dl
from train.data import load_dataset


class RangeHandler(http.server.SimpleHTTPRequestHandler):
    """Serves files, honouring 'Range: bytes=N-' (plain SimpleHTTPRequestHandler ignores it)."""

    allow_range = True

    def log_message(self, *args):  # keep test output quiet
        pass

    def do_GET(self):
        path = Path(self.translate_path(self.path))
        rng = self.headers.get("Range")
        if not (self.allow_range and rng and path.is_file()):
            return super().do_GET()
        start = int(rng.split("=")[1].rstrip("-"))
        data = path.read_bytes()[start:]
        self.send_response(206)
        self.send_header("Content-Length", str(len(data)))
        self.end_headers()
        self.wfile.write(data)


@pytest.fixture()
def server(tmp_path):
    root = tmp_path / "www"
    root.mkdir()
    httpd = http.server.ThreadingHTTPServer(("127.0.0.1", 0), partial(RangeHandler, directory=str(root)))
    thread = threading.Thread(target=httpd.serve_forever, daemon=True)
    thread.start()
    yield root, f"http://127.0.0.1:{httpd.server_address[1]}"
    httpd.shutdown()


def _pin(path: Path) -> dl.Archive:
    return dl.Archive(path.name, "http://unused/" + path.name, "sha256:" + hashlib.sha256(path.read_bytes()).hexdigest(),
                      path.stat().st_size)


def test_gtsrb_download_then_train_loader_reads_the_zips(server, tmp_path, monkeypatch, capsys):
    www, url = server
    synth.write_official(www, zipped=True)
    archives = [_pin(www / n) for n in ("GTSRB_Final_Training_Images.zip", "GTSRB_Final_Test_Images.zip", "GTSRB_Final_Test_GT.zip")]
    monkeypatch.setitem(dl.DATASETS, "gtsrb", archives)
    dest = tmp_path / "data"
    assert dl.main(["gtsrb", "--to", str(dest), "--base-url", url, "--quiet"]) == 0
    assert sorted(p.name for p in dest.iterdir()) == sorted(a.name for a in archives)
    assert len(load_dataset(dest, subset="test", size=16, progress=False)) == 12
    assert dl.main(["gtsrb", "--to", str(dest), "--base-url", url, "--quiet"]) == 0  # second run: verified, no fetch
    assert "already downloaded and verified" in capsys.readouterr().err


def test_cifar_download_unpacks(server, tmp_path, monkeypatch):
    www, url = server
    src = synth.write_cifar(tmp_path / "src")
    with tarfile.open(www / "cifar-10-python.tar.gz", "w:gz") as tar:
        tar.add(src / "cifar-10-batches-py", "cifar-10-batches-py")
    monkeypatch.setitem(dl.DATASETS, "cifar10", [_pin(www / "cifar-10-python.tar.gz")])
    assert dl.main(["cifar10", "--to", str(tmp_path / "c"), "--base-url", url, "--quiet"]) == 0
    assert len(load_dataset(tmp_path / "c", subset="test", progress=False)) == 20


def test_resume_appends_to_a_partial_file(server, tmp_path):
    www, url = server
    blob = bytes(range(256)) * 4000
    (www / "blob.bin").write_bytes(blob)
    archive = _pin(www / "blob.bin")
    dest = tmp_path / "d"
    dest.mkdir()
    (dest / "blob.bin.part").write_bytes(blob[:1000])
    got = dl.fetch(archive, dest, url=f"{url}/blob.bin", progress=False)
    assert got.read_bytes() == blob and not (dest / "blob.bin.part").exists()


def test_restart_when_server_ignores_range(server, tmp_path, monkeypatch, capsys):
    www, url = server
    monkeypatch.setattr(RangeHandler, "allow_range", False)
    blob = b"x" * 5000
    (www / "blob.bin").write_bytes(blob)
    dest = tmp_path / "d"
    dest.mkdir()
    (dest / "blob.bin.part").write_bytes(b"garbage-prefix")
    got = dl.fetch(_pin(www / "blob.bin"), dest, url=f"{url}/blob.bin", progress=False)
    assert got.read_bytes() == blob
    assert "restarting" in capsys.readouterr().err


def test_corrupted_archive_is_rejected_and_deleted(server, tmp_path, monkeypatch, capsys):
    www, url = server
    synth.write_official(www, zipped=True)
    good = _pin(www / "GTSRB_Final_Test_GT.zip")
    data = bytearray((www / "GTSRB_Final_Test_GT.zip").read_bytes())
    data[len(data) // 2] ^= 0xFF  # same size, one flipped byte
    (www / "GTSRB_Final_Test_GT.zip").write_bytes(bytes(data))
    monkeypatch.setitem(dl.DATASETS, "gtsrb", [good])
    dest = tmp_path / "data"
    assert dl.main(["gtsrb", "--to", str(dest), "--base-url", url, "--quiet"]) == 1
    err = capsys.readouterr().err
    assert "does not match its pinned checksum" in err and "Traceback" not in err
    assert list(dest.iterdir()) == []  # neither the file nor a .part is left


def test_unreachable_server(tmp_path, monkeypatch, capsys):
    monkeypatch.setitem(dl.DATASETS, "cifar10", [dl.Archive("x.tar.gz", "http://127.0.0.1:9/x.tar.gz", "md5:0")])
    assert dl.main(["cifar10", "--to", str(tmp_path), "--quiet"]) == 1
    assert "failed" in capsys.readouterr().err
