"""Download the official dataset archives, verified and resumable.

    python -m train.download gtsrb --to data/GTSRB
    python -m train.download cifar10 --to data/cifar10

GTSRB stays zipped (the loaders read the zips directly); CIFAR-10 is unpacked after download.
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
from collections.abc import Sequence
from dataclasses import dataclass
from pathlib import Path

from tqdm import tqdm

from runtime.atomic import ensure_writable_dir
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
DATASETS: dict[str, list[Archive]] = {
    "gtsrb": [
        Archive("GTSRB_Final_Training_Images.zip", GTSRB_BASE + "GTSRB_Final_Training_Images.zip", "md5:f33fd80ac59bff73c82d25ab499e03a3"),
        Archive("GTSRB_Final_Test_Images.zip", GTSRB_BASE + "GTSRB_Final_Test_Images.zip", "md5:c7e4e6327067d32654124b0fe9e82185"),
        Archive("GTSRB_Final_Test_GT.zip", GTSRB_BASE + "GTSRB_Final_Test_GT.zip", "md5:fe31e9c9270bbcd7b84b7f21a9d9d9e5"),
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


def verify(path: Path, archive: Archive) -> bool:
    if archive.size is not None and path.stat().st_size != archive.size:
        return False
    algo, expected = archive.digest.split(":", 1)
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


def download(dataset: str, to: Path, *, base_url: str | None = None, progress: bool = True) -> Path:
    """Fetch every archive of ``dataset`` into ``to`` and unpack what the loaders cannot read packed."""
    to = ensure_writable_dir(to, "--to")
    for archive in DATASETS[dataset]:
        path = fetch(archive, to, url=base_url.rstrip("/") + "/" + archive.name if base_url else None, progress=progress)
        if path.name.endswith(".tar.gz"):
            unpack_tar(path, to)
    return to


def build_parser() -> argparse.ArgumentParser:
    p = argparse.ArgumentParser(
        prog="python -m train.download", description="Download official dataset archives (verified, resumable).",
        formatter_class=HelpFormatter,
        epilog="examples:\n  python -m train.download gtsrb --to data/GTSRB\n  python -m train.download cifar10 --to data/cifar10",
    )
    p.add_argument("dataset", choices=sorted(DATASETS))
    p.add_argument("--to", type=Path, default=None, help="destination folder (default: data/DATASET)")
    p.add_argument("--base-url", default=None, help="mirror to fetch the same file names from")
    p.add_argument("--quiet", action="store_true", help="no progress bar")
    return p


@cli_errors("python -m train.download")
def main(argv: Sequence[str] | None = None) -> int:
    args = build_parser().parse_args(argv)
    to = download(args.dataset, args.to or Path("data") / args.dataset, base_url=args.base_url, progress=not args.quiet)
    print(f"{args.dataset} ready in {to} (train with: python -m train --data {to})")
    return 0


if __name__ == "__main__":
    sys.exit(main())
