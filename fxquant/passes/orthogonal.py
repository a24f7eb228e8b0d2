"""Seeded orthogonal matrices that fix the all-ones direction, for the rotation pass.

Q = U S Uᵀ, with U orthogonal and U[:, 0] = 1/√n, S = diag(1, ±1, ..., ±1) random signs. Then
Q·1 = 1, so Q maps mean-free vectors to mean-free vectors and commutes with LayerNorm's centring:
LayerNorm(x Q) = LayerNorm(x) Q without an affine. U is a normalised Hadamard matrix when one of
order n is known here (Sylvester 2^k times Paley I of order q + 1, q a prime ≡ 3 mod 4: 1, 2, 4,
8, 12, 20, 24, 32, 44, 48, ..., 192 = 12·16, 384 = 12·32, 768 = 12·64), else the Q factor of a
seeded Gaussian matrix whose first column is 1 (random orthogonal).
"""
from __future__ import annotations

import scipy.linalg
import sympy
import torch


def _paley(q: int) -> torch.Tensor:
    """Paley construction I: a Hadamard matrix of order q + 1 for a prime q ≡ 3 (mod 4)."""
    residues = {(i * i) % q for i in range(1, q)}
    chi = torch.tensor([0.0] + [1.0 if k in residues else -1.0 for k in range(1, q)],
                       dtype=torch.float64)
    idx = torch.arange(q)
    jacobsthal = chi[(idx[None, :] - idx[:, None]) % q]
    core = torch.zeros(q + 1, q + 1, dtype=torch.float64)
    core[0, 1:], core[1:, 0], core[1:, 1:] = 1.0, -1.0, jacobsthal
    return torch.eye(q + 1, dtype=torch.float64) + core


def _paley_order(m: int) -> bool:
    return m == 1 or (m % 4 == 0 and sympy.isprime(m - 1))


def hadamard(n: int) -> torch.Tensor | None:
    """A Hadamard matrix of order n (entries ±1, H Hᵀ = n I) with first column all ones, or None
    when n is not 2^k times a Paley order."""
    power = 1
    while n % (power * 2) == 0:
        power *= 2
    for sylvester in (power // 2 ** i for i in range(power.bit_length())):
        m = n // sylvester
        if _paley_order(m):
            base = torch.ones(1, 1, dtype=torch.float64) if m == 1 else _paley(m - 1)
            h = torch.kron(base, torch.tensor(scipy.linalg.hadamard(sylvester), dtype=torch.float64))
            return h * torch.sign(h[:, :1])  # rows times ±1: first column all ones
    return None


def ones_fixing_rotation(n: int, seed: int) -> tuple[torch.Tensor, str]:
    """(Q, kind): an n x n float64 orthogonal Q with Q·1 = 1, and "hadamard" or "random"."""
    generator = torch.Generator().manual_seed(seed)
    h = hadamard(n)
    if h is not None:
        basis, kind = h / n ** 0.5, "hadamard"
    else:
        a = torch.randn(n, n, generator=generator, dtype=torch.float64)
        a[:, 0] = 1.0
        basis, r = torch.linalg.qr(a)
        basis, kind = basis * torch.sign(torch.diagonal(r)), "random"  # U[:, 0] = +1/√n
    signs = torch.randint(0, 2, (n,), generator=generator, dtype=torch.float64) * 2 - 1
    signs[0] = 1.0
    return basis @ torch.diag(signs) @ basis.T, kind
