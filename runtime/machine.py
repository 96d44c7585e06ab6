"""The CPU a timing was taken on, in one line, so no frame rate or ms per ROI is read without its hardware.

Int8 kernels run several times faster on a CPU with integer dot-product instructions (x86 AVX-512
VNNI or AVX-VNNI, arm64 ``asimddp``) than on one without, and float kernels faster with wider vectors
(AVX-512), so a figure means little without the CPU and these features beside it. Standard library
only: the runtime stays light.
"""

from __future__ import annotations

import os
import platform
from pathlib import Path

# The SIMD features that decide XNNPACK's and onnxruntime's speed, as /proc/cpuinfo names them.
# x86: 256-bit AVX2/FMA, 512-bit AVX-512 and its int8 dot products (VNNI), AMX tiles.
# arm64: NEON (asimd; Raspberry Pi 4), int8 dot products (asimddp; Pi 5), int8 matrix multiply (i8mm), SVE.
SIMD_FEATURES = ("avx2", "fma", "avx512f", "avx512_vnni", "avx_vnni", "amx_int8", "asimd", "asimddp", "i8mm", "sve")


def _fields(cpuinfo: str) -> dict[str, str]:
    """The first value of each key of /proc/cpuinfo (every core repeats them)."""
    out: dict[str, str] = {}
    for line in cpuinfo.splitlines():
        key, sep, value = line.partition(":")
        if sep:
            out.setdefault(key.strip().lower(), value.strip())
    return out


def describe_cpu(cpuinfo: str | None = None, cores: int | None = None) -> str:
    """E.g. ``AMD EPYC, 2 cores, avx2 fma`` or ``Raspberry Pi 5 Model B Rev 1.0, 4 cores, asimd asimddp``.

    ``cpuinfo`` is the text of /proc/cpuinfo (read here when None; absent off Linux, where the
    platform module's names stand in and the features are left out).
    """
    if cpuinfo is None:
        try:
            cpuinfo = Path("/proc/cpuinfo").read_text(errors="replace")
        except OSError:
            cpuinfo = ""
    fields = _fields(cpuinfo)
    # A Raspberry Pi names its board under "Model"; x86 names the chip under "model name" (its "model" is a number).
    board = fields.get("model", "")
    name = (board if board and not board.isdigit() else "") or fields.get("model name") or platform.processor() \
        or platform.machine() or "unknown CPU"
    cores = cores if cores is not None else (os.cpu_count() or 1)
    flags = set((fields.get("flags") or fields.get("features") or "").split())
    simd = " ".join(f for f in SIMD_FEATURES if f in flags)
    return f"{name}, {cores} core{'s' if cores != 1 else ''}" + (f", {simd}" if simd else "")
