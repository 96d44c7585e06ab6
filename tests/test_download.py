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


def _gtsdb_zip(path: Path, stems: list[str]) -> list[str]:
    """A TrainIJCNN2013.zip in the official layout: PPM frames and a gt.txt (CRLF, as published), its lines returned."""
    import zipfile

    import cv2
    import numpy as np

    lines = [f"{s}.ppm;10;20;40;50;{i % 43}" for i, s in enumerate(stems)]
    with zipfile.ZipFile(path, "w") as z:
        for i, s in enumerate(stems):
            _, ppm = cv2.imencode(".ppm", np.full((60, 80, 3), 10 * i, np.uint8))
            z.writestr(f"TrainIJCNN2013/{s}.ppm", ppm.tobytes())
        z.writestr("TrainIJCNN2013/gt.txt", "\r\n".join(lines) + "\r\n")
    return lines


def test_gtsdb_download_is_split_into_the_three_frame_folders(server, tmp_path, monkeypatch):
    from runtime.annotations import frame_files

    www, url = server
    lines = _gtsdb_zip(www / "TrainIJCNN2013.zip", ["00000", "00059", "00060", "00359", "00360", "00599"])
    monkeypatch.setitem(dl.DATASETS, "gtsdb", [dl.Archive("TrainIJCNN2013.zip", url + "/TrainIJCNN2013.zip",
                                                          "gt-sha256:" + dl.gt_digest(lines))])
    to = tmp_path / "GTSDB"
    assert dl.main(["gtsdb", "--to", str(to), "--quiet"]) == 0
    for folder, stems in (("gtsdb", ["00000", "00059"]), ("gtsdb-train", ["00060", "00359"]), ("gtsdb-more", ["00360", "00599"])):
        files, gt = frame_files(to / folder)
        assert sorted(files) == stems and sorted(gt) == stems  # every frame with its signs, readable as frames
    assert (to / "gtsdb" / "gt.txt").read_text() == "00000.ppm;10;20;40;50;0\n00059.ppm;10;20;40;50;1\n"


def test_a_gtsdb_archive_with_other_annotations_or_a_bad_member_is_refused(server, tmp_path, monkeypatch, capsys):
    import zipfile

    www, url = server
    lines = _gtsdb_zip(www / "TrainIJCNN2013.zip", ["00000", "00060"])
    archive = dl.Archive("TrainIJCNN2013.zip", url + "/TrainIJCNN2013.zip", "gt-sha256:" + dl.gt_digest([*lines, "x"]))
    monkeypatch.setitem(dl.DATASETS, "gtsdb", [archive])
    assert dl.main(["gtsdb", "--to", str(tmp_path / "a"), "--quiet"]) == 1
    assert "does not match its pinned checksum" in capsys.readouterr().err
    assert not (tmp_path / "a" / "TrainIJCNN2013.zip").exists() and not (tmp_path / "a" / "gtsdb").exists()
    good = dl.Archive(archive.name, archive.url, "gt-sha256:" + dl.gt_digest(lines))
    data = bytearray((www / "TrainIJCNN2013.zip").read_bytes())
    with zipfile.ZipFile(www / "TrainIJCNN2013.zip") as z:
        member = z.getinfo("TrainIJCNN2013/00000.ppm")
    at = member.header_offset + 30 + len(member.filename) + 100  # a byte inside the first frame's data
    data[at] ^= 0xFF
    (www / "TrainIJCNN2013.zip").write_bytes(bytes(data))
    monkeypatch.setitem(dl.DATASETS, "gtsdb", [good])
    assert dl.main(["gtsdb", "--to", str(tmp_path / "b"), "--quiet"]) == 1  # its CRC no longer checks
    assert "does not match its pinned checksum" in capsys.readouterr().err
