"""Download the official dataset archives, verified and resumable.

    python -m train.download gtsrb --to data/GTSRB
    python -m train.download gtsdb --to data/GTSDB
    python -m train.download cifar10 --to data/cifar10

GTSRB stays zipped (the loaders read the zips directly); CIFAR-10 is unpacked after download. GTSDB's training
part (600 road frames, 852 signs) is split into the three folders the frame pipeline fits and scores on:
``gtsdb`` (frames 0-59: score here), ``gtsdb-train`` (60-359) and ``gtsdb-more`` (360-599: fit here), each
frames (JPEG) and a ``gt.txt``. Its archive has no published checksum: it is checked by the CRC of every
member and by the SHA-256 of its annotations, sorted, which are pinned here.
A partial download is kept as FILE.part and resumed with an HTTP Range request when the
server allows it, else restarted. A file whose checksum does not match is deleted, never kept.
"""

from __future__ import annotations

import argparse
import hashlib
import os
import sys
import tarfile
import urllib.error
import urllib.request
import zipfile
from collections.abc import Sequence
from dataclasses import dataclass
from pathlib import Path

from tqdm import tqdm

from runtime.atomic import ensure_writable_dir, write_text_atomic
from runtime.cli import HelpFormatter
from runtime.errors import SignkitError, cli_errors


class DownloadError(SignkitError):
    """A download failed or produced a file that does not match its pinned checksum."""


@dataclass(frozen=True)
class Archive:
    name: str
    url: str
    digest: str  # "algo:hex", as published by the dataset's authors
    size: int | None = None


GTSRB_BASE = "https://sid.erda.dk/public/archives/daaeac0d7ce1152aea9b61d9f1e19370/"
GTSDB_BASE = "https://sid.erda.dk/public/archives/ff17dc924eba88d5d01a807357d6614c/"
DATASETS: dict[str, list[Archive]] = {
    "gtsrb": [
        Archive("GTSRB_Final_Training_Images.zip", GTSRB_BASE + "GTSRB_Final_Training_Images.zip", "md5:f33fd80ac59bff73c82d25ab499e03a3"),
        Archive("GTSRB_Final_Test_Images.zip", GTSRB_BASE + "GTSRB_Final_Test_Images.zip", "md5:c7e4e6327067d32654124b0fe9e82185"),
        Archive("GTSRB_Final_Test_GT.zip", GTSRB_BASE + "GTSRB_Final_Test_GT.zip", "md5:fe31e9c9270bbcd7b84b7f21a9d9d9e5"),
    ],
    "gtsdb": [
        # "gt-sha256": the SHA-256 of the archive's gt.txt lines, stripped and sorted, joined by newlines (852 signs)
        Archive("TrainIJCNN2013.zip", GTSDB_BASE + "TrainIJCNN2013.zip",
                "gt-sha256:49ea370cba7aa4f14b764570bca54d66eea55c05ad5256dcbd948871cb83a3b4"),
    ],
    "cifar10": [
        Archive("cifar-10-python.tar.gz", "https://www.cs.toronto.edu/~kriz/cifar-10-python.tar.gz",
                "md5:c58f30108f718f92721af3b95e74349a", 170498071),
    ],
}


def file_digest(path: Path, algo: str) -> str:
    h = hashlib.new(algo)
    with open(path, "rb") as f:
        for chunk in iter(lambda: f.read(1 << 20), b""):
            h.update(chunk)
    return h.hexdigest()


def gt_digest(lines: list[str]) -> str:
    return hashlib.sha256("\n".join(sorted(line.strip() for line in lines if line.strip())).encode()).hexdigest()


def _zip_gt_digest(path: Path) -> str | None:
    """The digest of a GTSDB zip's annotations, once every member's CRC checks; None if it is not a sound such zip."""
    try:
        with zipfile.ZipFile(path) as z:
            if z.testzip() is not None:
                return None
            names = [n for n in z.namelist() if n.endswith("gt.txt")]
            return gt_digest(z.read(names[0]).decode().splitlines()) if names else None
    except (zipfile.BadZipFile, OSError, UnicodeDecodeError):
        return None


def verify(path: Path, archive: Archive) -> bool:
    if archive.size is not None and path.stat().st_size != archive.size:
        return False
    algo, expected = archive.digest.split(":", 1)
    if algo == "gt-sha256":
        return _zip_gt_digest(path) == expected
    return file_digest(path, algo) == expected


def fetch(archive: Archive, dest_dir: Path, *, url: str | None = None, progress: bool = True, timeout: float = 60) -> Path:
    """Download one archive into ``dest_dir``, resuming a ``.part`` file if the server allows it.

    Raises:
        DownloadError: network failure or checksum mismatch (the bad file is deleted).
    """
    dest = dest_dir / archive.name
    if dest.is_file() and verify(dest, archive):
        print(f"{dest} already downloaded and verified", file=sys.stderr)
        return dest
    part = dest.with_name(dest.name + ".part")
    have = part.stat().st_size if part.is_file() else 0
    request = urllib.request.Request(url or archive.url, headers={"Range": f"bytes={have}-"} if have else {})
    try:
        with urllib.request.urlopen(request, timeout=timeout) as resp:
            resumed = have > 0 and resp.status == 206
            if have and not resumed:
                print(f"server ignored the resume request; restarting {archive.name}", file=sys.stderr)
                have = 0
            length = resp.headers.get("Content-Length")
            total = have + int(length) if length else archive.size
            with open(part, "ab" if resumed else "wb") as f, tqdm(
                total=total, initial=have, unit="B", unit_scale=True, desc=archive.name, disable=not progress, file=sys.stderr
            ) as bar:
                for chunk in iter(lambda: resp.read(1 << 16), b""):
                    f.write(chunk)
                    bar.update(len(chunk))
    except (urllib.error.URLError, OSError) as err:
        raise DownloadError(f"downloading {url or archive.url} failed ({err}); check the network and re-run to resume") from None
    if not verify(part, archive):
        part.unlink()
        raise DownloadError(f"{archive.name} does not match its pinned checksum ({archive.digest}); the corrupt file was "
                            f"deleted, re-run to download it again")
    os.replace(part, dest)
    return dest


def unpack_tar(archive: Path, dest_dir: Path) -> None:
    with tarfile.open(archive) as tar:
        tar.extractall(dest_dir, filter="data")


GTSDB_FOLDERS = (("gtsdb", 0, 60), ("gtsdb-train", 60, 360), ("gtsdb-more", 360, 600))  # frame numbers [start, end)


def split_gtsdb(archive: Path, to: Path) -> None:
    """The frames of GTSDB's training zip as three frame folders (JPEG, quality 95) with their gt.txt lines."""
    import cv2
    import numpy as np

    with zipfile.ZipFile(archive) as z:
        gt_name = next(n for n in z.namelist() if n.endswith("gt.txt"))
        lines = [line.strip() for line in z.read(gt_name).decode().splitlines() if line.strip()]
        frames = {Path(n).stem: n for n in z.namelist() if n.lower().endswith(".ppm")}
        for folder, start, end in GTSDB_FOLDERS:
            out = to / folder
            out.mkdir(parents=True, exist_ok=True)
            for stem in sorted(s for s in frames if s.isdigit() and start <= int(s) < end):
                image = cv2.imdecode(np.frombuffer(z.read(frames[stem]), np.uint8), cv2.IMREAD_COLOR)
                if image is None:
                    raise DownloadError(f"{archive.name}: {frames[stem]} is not a readable image; delete {archive} and "
                                        f"download it again")
                cv2.imwrite(str(out / f"{stem}.jpg"), image, [cv2.IMWRITE_JPEG_QUALITY, 95])
            mine = [line for line in lines if line.split(".")[0].isdigit() and start <= int(line.split(".")[0]) < end]
            write_text_atomic(out / "gt.txt", "".join(line + "\n" for line in mine))


def download(dataset: str, to: Path, *, base_url: str | None = None, progress: bool = True) -> Path:
    """Fetch every archive of ``dataset`` into ``to`` and unpack what the loaders cannot read packed."""
    to = ensure_writable_dir(to, "--to")
    for archive in DATASETS[dataset]:
        path = fetch(archive, to, url=base_url.rstrip("/") + "/" + archive.name if base_url else None, progress=progress)
        if path.name.endswith(".tar.gz"):
            unpack_tar(path, to)
        if dataset == "gtsdb":
            split_gtsdb(path, to)
    return to


def build_parser() -> argparse.ArgumentParser:
    p = argparse.ArgumentParser(
        prog="python -m train.download", description="Download official dataset archives (verified, resumable).",
        formatter_class=HelpFormatter,
        epilog="examples:\n  python -m train.download gtsrb --to data/GTSRB\n  python -m train.download gtsdb --to data/GTSDB",
    )
    p.add_argument("dataset", choices=sorted(DATASETS))
    p.add_argument("--to", type=Path, default=None, help="destination folder (default: data/DATASET in capitals)")
    p.add_argument("--base-url", default=None, help="mirror to fetch the same file names from")
    p.add_argument("--quiet", action="store_true", help="no progress bar")
    return p


@cli_errors("python -m train.download")
def main(argv: Sequence[str] | None = None) -> int:
    args = build_parser().parse_args(argv)
    to = download(args.dataset, args.to or Path("data") / args.dataset.upper(), base_url=args.base_url, progress=not args.quiet)
    if args.dataset == "gtsdb":
        print(f"gtsdb ready in {to}: fit the frame pipeline on {to}/gtsdb-train {to}/gtsdb-more, score it on {to}/gtsdb")
    else:
        print(f"{args.dataset} ready in {to} (train with: python -m train --data {to})")
    return 0


if __name__ == "__main__":
    sys.exit(main())
