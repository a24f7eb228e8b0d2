import pytest

from fxquant import cpu

EPYC_AVX2 = """processor\t: 0
vendor_id\t: AuthenticAMD
model name\t: AMD EPYC 7B13
flags\t\t: fpu vme de pse tsc msr pae mce cx8 sse sse2 ssse3 fma sse4_1 sse4_2 avx f16c avx2 bmi2 sha_ni

processor\t: 1
vendor_id\t: AuthenticAMD
model name\t: AMD EPYC 7B13
flags\t\t: fpu vme de pse tsc msr pae mce cx8 sse sse2 ssse3 fma sse4_1 sse4_2 avx f16c avx2 bmi2 sha_ni
"""

XEON_AVX512_VNNI = """processor\t: 0
vendor_id\t: GenuineIntel
model name\t: Intel(R) Xeon(R) Gold 6248 CPU @ 2.50GHz
flags\t\t: fpu sse sse2 avx avx2 avx512f avx512dq avx512cd avx512bw avx512vl avx512_vnni
"""

XEON_AVX512 = """processor\t: 0
model name\t: Intel(R) Xeon(R) Gold 6148 CPU @ 2.40GHz
flags\t\t: fpu sse sse2 avx avx2 avx512f avx512dq avx512cd avx512bw avx512vl
"""

GRAVITON_ARM64 = """processor\t: 0
BogoMIPS\t: 243.75
Features\t: fp asimd evtstrm aes pmull sha1 sha2 crc32 atomics fphp asimdhp cpuid asimddp
CPU implementer\t: 0x41
CPU architecture: 8
CPU part\t: 0xd0c
"""


@pytest.mark.parametrize("text, machine, model, kind, flags, exact", [
    (EPYC_AVX2, "x86_64", "AMD EPYC 7B13", "AVX2 (no VNNI)", ("avx2",), False),
    (XEON_AVX512_VNNI, "x86_64", "Intel(R) Xeon(R) Gold 6248 CPU @ 2.50GHz", "AVX-512 VNNI",
     ("avx2", "avx512f", "avx512bw", "avx512_vnni"), True),
    (XEON_AVX512, "x86_64", "Intel(R) Xeon(R) Gold 6148 CPU @ 2.40GHz", "AVX-512 (no VNNI)",
     ("avx2", "avx512f", "avx512bw"), False),
    (GRAVITON_ARM64, "aarch64", "0xd0c", "ARM64", (), True),
], ids=["epyc-avx2", "xeon-avx512-vnni", "xeon-avx512", "arm64"])
def test_parse_cpuinfo_finds_model_int8_flags_and_exactness(text, machine, model, kind, flags,
                                                            exact):
    info = cpu.parse_cpuinfo(text, machine)
    assert (info.model, info.kind, info.flags, info.full_range_int8_exact) == \
        (model, kind, flags, exact)
    assert info.as_dict() == {"cpu_model": model, "cpu_kind": kind, "cpu_flags": list(flags),
                              "full_range_int8_exact": exact}
    assert model in info.describe() and kind in info.describe()


def test_current_cpu_describes_this_machine():
    info = cpu.current()
    assert info.model and set(info.flags) <= set(cpu.INT8_FLAGS)
