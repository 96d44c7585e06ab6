"""runtime.machine names the CPU a timing was taken on, from /proc/cpuinfo as x86 and a Raspberry Pi write it."""

from __future__ import annotations

from runtime.machine import describe_cpu

X86 = """processor\t: 0
vendor_id\t: AuthenticAMD
cpu family\t: 23
model\t\t: 49
model name\t: AMD EPYC
flags\t\t: fpu sse4_2 avx f16c fma avx2 sha_ni

processor\t: 1
model\t\t: 49
model name\t: AMD EPYC
flags\t\t: fpu sse4_2 avx f16c fma avx2 sha_ni
"""

# A Raspberry Pi 5 on 64-bit Raspberry Pi OS: no "model name"; the board is under "Model".
PI5 = """processor\t: 0
BogoMIPS\t: 108.00
Features\t: fp asimd evtstrm aes pmull sha1 sha2 crc32 atomics fphp asimdhp cpuid asimdrdm lrcpc dcpop asimddp
CPU implementer\t: 0x41
CPU part\t: 0xd0b

Revision\t: d04170
Model\t\t: Raspberry Pi 5 Model B Rev 1.0
"""

XEON = "model name\t: Intel(R) Xeon(R) Platinum 8481C\nflags\t\t: avx2 fma avx512f avx512_vnni amx_int8\n"


def test_x86_names_the_chip_not_its_model_number():
    assert describe_cpu(X86, cores=2) == "AMD EPYC, 2 cores, avx2 fma"


def test_raspberry_pi_names_the_board_and_its_dot_product_feature():
    assert describe_cpu(PI5, cores=4) == "Raspberry Pi 5 Model B Rev 1.0, 4 cores, asimd asimddp"


def test_int8_dot_product_features_are_named():
    assert describe_cpu(XEON, cores=1).endswith("1 core, avx2 fma avx512f avx512_vnni amx_int8")


def test_without_cpuinfo_it_still_names_something():
    text = describe_cpu("", cores=3)
    assert text.endswith(", 3 cores") and len(text) > len(", 3 cores")
