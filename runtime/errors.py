"""Project exceptions and the one place that turns them into a one-line CLI error."""

from __future__ import annotations

import errno
import functools
import sys
from collections.abc import Callable, Sequence


class SignkitError(Exception):
    """Base of every error a user can fix; the message names the file or flag and the fix."""


class DatasetFormatError(SignkitError):
    """A dataset folder, CSV or image that cannot be read as any known layout."""


class ConfigError(SignkitError):
    """Flags or settings that cannot work together (e.g. an image size too small for a model)."""


class BuildError(SignkitError):
    """A model build (.tflite/.onnx) or its metadata that cannot be used."""


class BackendUnavailableError(SignkitError, ImportError):
    """The inference library a build needs is not installed."""


# Errors of the disk rather than the program: said in one line, like any other the user can fix.
DISK_ERRNOS = {errno.ENOSPC, errno.EDQUOT, errno.EROFS, errno.EACCES, errno.EPERM, errno.EIO}


Main = Callable[..., int]


def cli_errors(prog: str) -> Callable[[Main], Main]:
    """Decorate a ``main(argv=None) -> int`` so project errors print as one line and exit 1 (Ctrl-C: 130)."""

    def decorate(main: Main) -> Main:
        @functools.wraps(main)
        def wrapper(argv: Sequence[str] | None = None) -> int:
            try:
                return main(argv)
            except SignkitError as err:
                print(f"{prog}: error: {err}", file=sys.stderr)
                return 1
            except OSError as err:
                if err.errno not in DISK_ERRNOS:
                    raise
                where = f" {err.filename}" if err.filename else ""
                print(f"{prog}: error: cannot write{where} ({err.strerror}); nothing half-written was kept: free "
                      f"space or choose a folder you can write to", file=sys.stderr)
                return 1
            except KeyboardInterrupt:
                print(f"{prog}: interrupted", file=sys.stderr)
                return 130

        return wrapper

    return decorate
