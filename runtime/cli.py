"""The ``--help`` layout every signkit command shares."""

from __future__ import annotations

import argparse


class HelpFormatter(argparse.RawDescriptionHelpFormatter, argparse.ArgumentDefaultsHelpFormatter):
    """Keeps the epilog's example lines as written and shows a flag's default only where it says something
    (not for unset options, whose help text explains what happens then, nor for on/off switches)."""

    def _get_help_string(self, action: argparse.Action) -> str:
        if action.default is None or action.default is False or action.default is argparse.SUPPRESS:
            return action.help or ""
        return super()._get_help_string(action) or ""


def frame_size(text: str) -> tuple[int, int]:
    """An argparse type: ``WxH`` (e.g. 1280x720) as (width, height)."""
    try:
        w, h = (int(v) for v in text.lower().split("x"))
    except ValueError:
        raise argparse.ArgumentTypeError(f"{text!r} is not WxH, e.g. 1280x720") from None
    if w < 16 or h < 16:
        raise argparse.ArgumentTypeError(f"{text!r} is too small")
    return w, h
