"""Integer targets: which CPUs an exported file must compute exactly on.

onnxruntime runs a uint8-activation x int8-weight GEMM on x86 CPUs without VNNI (AVX2, AVX-512
without VNNI) with `vpmaddubsw`, which adds each adjacent pair of products in int16 and saturates.
A pair a0*w0 + a1*w1 stays within int16 when 2 * max(a) * 2^(b-1) <= 32767 for b-bit weights, so
8-bit weights against activations that can reach code 255 need one bit less.

- `portable` (default): 8-bit weights that meet such activations get 7-bit codes ([-64, 63]); every
  other layer keeps its bits. Exact on every x86 CPU and on ARM64, at full int8 speed.
- `vnni`: full 8-bit codes everywhere; exact only where the int8 GEMM sums in int32 (AVX-512 VNNI,
  AVX-VNNI, AMX, ARM64). A file for this target warns when loaded on another CPU.
"""
from __future__ import annotations

from fxquant.errors import FxQuantError

PORTABLE = "portable"
VNNI = "vnni"
TARGETS = {PORTABLE: "exact on every CPU (7-bit weight codes where an 8x8-bit GEMM could saturate)",
           VNNI: "full 8-bit weight codes: exact only on VNNI / AMX / ARM64 CPUs"}
DEFAULT = PORTABLE
INT16_MAX = 32767
FULL_RANGE_ACTIVATION_MAX = 255  # what a GEMM input is assumed to reach when nothing bounds it


def check_target(target: str) -> str:
    if target not in TARGETS:
        raise FxQuantError(f"unknown target {target!r}: choose one of {sorted(TARGETS)}")
    return target


def pair_fits_int16(activation_max: int, weight_min: int, weight_max: int) -> bool:
    """Whether any pair of products a0*w0 + a1*w1 with 0 <= a <= activation_max fits in int16."""
    return 2 * activation_max * max(weight_max, 0) <= INT16_MAX and \
        2 * activation_max * min(weight_min, 0) >= -INT16_MAX - 1


def weight_bits(bits: int, activation_max: int, target: str) -> int:
    """Bits of a weight's codes on `target` when its GEMM input reaches code `activation_max`
    (an unsigned code; onnxruntime offsets int8 activations by 128 before such a GEMM)."""
    if check_target(target) == VNNI:
        return bits
    while bits > 2 and not pair_fits_int16(activation_max, -2 ** (bits - 1), 2 ** (bits - 1) - 1):
        bits -= 1
    return bits


def add_argument(parser) -> None:
    """`--target` for every command that quantizes."""
    parser.add_argument("--target", default=DEFAULT, choices=sorted(TARGETS),
                        help="CPUs the integer file must be exact on: "
                             + "; ".join(f"{k}: {v}" for k, v in TARGETS.items()))
