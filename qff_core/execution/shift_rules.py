"""Exact parameter-shift rules for gates whose generator has a known spectrum.

A gate exp(-i p G) makes an expectation value a trigonometric polynomial in p whose
frequencies are the positive differences of G's eigenvalues. With R frequencies, 2R
evaluations at symmetric shifts give df/dp exactly (Wierichs et al., Quantum 6, 677, 2022);
one frequency is the familiar two-term rule. No finite differences anywhere.
"""

from __future__ import annotations

from dataclasses import dataclass
from math import gcd

import numpy as np

from qff_core.errors import ModelBuildError

SPECTRUM_DECIMALS = 9
"""Eigenvalues are rounded to this many decimals before taking differences."""
MAX_RULE_CONDITION = 1e8
"""A shift rule whose linear system is worse conditioned than this is refused."""


@dataclass(frozen=True)
class ShiftRule:
    """df/dp = sum_k coeffs[k] * f(p + shifts[k]) for every p (radians of the gate's parameter)."""

    shifts: tuple[float, ...]
    coeffs: tuple[float, ...]

    def __len__(self) -> int:
        return len(self.shifts)

    def compose(self, other: ShiftRule) -> ShiftRule:
        """The rule for the mixed second derivative when both rules act on the same parameter.

        Terms with equal total shift are merged; a zero shift is kept (it is the unshifted value).
        """
        merged: dict[float, float] = {}
        for s1, c1 in zip(self.shifts, self.coeffs, strict=True):
            for s2, c2 in zip(other.shifts, other.coeffs, strict=True):
                key = round(s1 + s2, 12)
                merged[key] = merged.get(key, 0.0) + c1 * c2
        items = sorted((s, c) for s, c in merged.items() if abs(c) > 1e-15)
        return ShiftRule(tuple(s for s, _ in items), tuple(c for _, c in items))


def frequency_rule(frequencies: tuple[float, ...]) -> ShiftRule:
    """The 2R-term rule for f(p) = a0 + sum_r a_r cos(w_r p) + b_r sin(w_r p), w_r in ``frequencies``.

    Commensurate frequencies (integer multiples of a base w0, as for every Heisenberg
    generator) use the equidistant shifts (2mu - 1) pi / (2 R w0) with R = max(w) / w0.
    """
    freqs = sorted({round(float(w), SPECTRUM_DECIMALS) for w in frequencies if w > 10**-SPECTRUM_DECIMALS})
    if not freqs:
        raise ModelBuildError("a gate whose generator has a single eigenvalue has no gradient to shift for")
    base = _common_base(freqs)
    if base is not None:
        omegas = [base * k for k in range(1, round(freqs[-1] / base) + 1)]
        shifts = [(2 * mu - 1) * np.pi / (2 * len(omegas) * base) for mu in range(1, len(omegas) + 1)]
    else:
        omegas = freqs
        shifts = [(2 * mu - 1) * np.pi / (2 * len(omegas) * freqs[-1]) for mu in range(1, len(omegas) + 1)]
    # Antisymmetric coefficients y(-s) = -y(s) cancel the constant and cosine terms; the
    # sine terms fix y: sum_mu 2 y_mu sin(w_r s_mu) = w_r.
    a = np.array([[2.0 * np.sin(w * s) for s in shifts] for w in omegas])
    if np.linalg.cond(a) > MAX_RULE_CONDITION:
        raise ModelBuildError(f"no well-conditioned shift rule for frequencies {freqs}")
    y = np.linalg.solve(a, np.array(omegas))
    return ShiftRule(tuple(shifts) + tuple(-s for s in shifts), tuple(y) + tuple(-y))


def _common_base(freqs: list[float]) -> float | None:
    """The largest w0 with every frequency an integer multiple of it (up to 64 multiples), if any."""
    smallest = freqs[0]
    for denominator in range(1, 9):
        unit = smallest / denominator
        ratios = [w / unit for w in freqs]
        if all(abs(r - round(r)) < 1e-7 for r in ratios):
            ints = [round(r) for r in ratios]
            g = 0
            for k in ints:
                g = gcd(g, k)
            w0 = unit * g
            return w0 if freqs[-1] / w0 <= 64 else None
    return None


PAULI_ROTATION = ShiftRule((np.pi / 2, -np.pi / 2), (0.5, -0.5))
"""exp(-i p P / 2), P a Pauli string: eigenvalues +-1/2, one frequency."""
HEISENBERG_PAIR = frequency_rule((4.0,))
"""exp(-i J sigma_i.sigma_j): eigenvalues {1, -3}, one frequency 4: df/dJ = 2 [f(J + pi/8) - f(J - pi/8)]."""
Z_STRING = frequency_rule((2.0,))
"""exp(-i p Z_S), Z_S a string of Z's: eigenvalues +-1, one frequency 2: df/dp = f(p + pi/4) - f(p - pi/4)."""
