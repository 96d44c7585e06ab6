"""Exit 0 if a dataset has a subset (train/val/test), 1 if not: lets scripts skip a missing test set.

    python -m train.data.has_subset data/GTSRB test
"""

from __future__ import annotations

import sys
from collections.abc import Sequence
from pathlib import Path

from runtime.errors import DatasetFormatError
from train.data.dataset import check_data_path, detect_format
from train.data.formats import FORMATS


def has_subset(path: Path, subset: str) -> bool:
    try:
        check_data_path(path)
        FORMATS[detect_format(path)].listing(path, subset)
    except DatasetFormatError:
        return False
    return True


def main(argv: Sequence[str] | None = None) -> int:
    args = list(sys.argv[1:] if argv is None else argv)
    if len(args) != 2:
        print("usage: python -m train.data.has_subset PATH SUBSET", file=sys.stderr)
        return 2
    return 0 if has_subset(Path(args[0]), args[1]) else 1


if __name__ == "__main__":
    sys.exit(main())
