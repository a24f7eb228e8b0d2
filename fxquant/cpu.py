"""What this CPU's int8 GEMM does: the facts an integer ONNX file's exactness depends on.

onnxruntime's MLAS picks its u8 x s8 GEMM kernel by CPU feature. With VNNI (AVX-512 VNNI,
AVX-VNNI), AMX or on ARM64 the products are summed in int32: exact. On x86 without them (AVX2,
AVX-512 without VNNI) adjacent pairs of uint8 x int8 products are added in int16 with saturation
(`vpmaddubsw`): exact only when no pair can exceed 32767 (`lowering/saturation.py`).
"""
from __future__ import annotations

import functools
import platform
from dataclasses import dataclass
from pathlib import Path

INT8_FLAGS = ("avx2", "avx512f", "avx512bw", "avx512_vnni", "avx_vnni", "amx_int8")
EXACT_INT8_FLAGS = ("avx512_vnni", "avx_vnni", "amx_int8")


@dataclass(frozen=True)
class CpuInfo:
    model: str
    machine: str            # platform.machine(): x86_64, aarch64, ...
    flags: tuple[str, ...]  # the INT8_FLAGS this CPU has

    @property
    def full_range_int8_exact(self) -> bool:
        """Whether a u8 x s8 GEMM with codes over the full 8-bit ranges sums exactly here."""
        if self.machine.lower() in ("aarch64", "arm64"):
            return True
        return any(flag in self.flags for flag in EXACT_INT8_FLAGS)

    @property
    def kind(self) -> str:
        """A short name for tables: `VNNI`, `AVX2 (no VNNI)`, `ARM64`, ..."""
        if self.machine.lower() in ("aarch64", "arm64"):
            return "ARM64"
        if "amx_int8" in self.flags:
            return "AMX + AVX-512 VNNI" if "avx512_vnni" in self.flags else "AMX"
        if "avx512_vnni" in self.flags:
            return "AVX-512 VNNI"
        if "avx_vnni" in self.flags:
            return "AVX-VNNI"
        if "avx512bw" in self.flags:
            return "AVX-512 (no VNNI)"
        if "avx2" in self.flags:
            return "AVX2 (no VNNI)"
        return "x86 without AVX2"

    def describe(self) -> str:
        return f"{self.model} [{self.kind}; flags: {' '.join(self.flags) or 'none'}]"

    def as_dict(self) -> dict:
        return {"cpu_model": self.model, "cpu_kind": self.kind, "cpu_flags": list(self.flags),
                "full_range_int8_exact": self.full_range_int8_exact}


def parse_cpuinfo(text: str, machine: str) -> CpuInfo:
    """CpuInfo from the text of /proc/cpuinfo (the first processor's entry)."""
    fields: dict[str, str] = {}
    for line in text.splitlines():
        if not line.strip():
            if fields:
                break
            continue
        key, _, value = line.partition(":")
        fields.setdefault(key.strip(), value.strip())
    model = fields.get("model name") or fields.get("Model") or fields.get("CPU part") or "unknown CPU"
    present = set((fields.get("flags") or fields.get("Features") or "").split())
    return CpuInfo(model, machine, tuple(f for f in INT8_FLAGS if f in present))


@functools.cache
def current() -> CpuInfo:
    """This machine's CPU (Linux reads /proc/cpuinfo; elsewhere the flags are unknown)."""
    cpuinfo = Path("/proc/cpuinfo")
    if cpuinfo.is_file():
        return parse_cpuinfo(cpuinfo.read_text(errors="replace"), platform.machine())
    return CpuInfo(platform.processor() or "unknown CPU", platform.machine(), ())
