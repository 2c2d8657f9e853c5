"""Lesson 5 derivation: the chance level of the (q∥u)·(k∥m) share is 1/d^2 (in d = 3).

For a direction u uniform on the sphere, E[u u^T] = I/d (integrated here in d = 3). The term
(x_q·u)(x_k·m) u^T B m of two independent directions is x_q^T (u u^T) B (m m^T) x_k, so its
expectation is x_q^T B x_k / d^2: a share of 1/d^2 of the bilinear score. B is a general
(non-symmetric) 3x3 matrix and x_q, x_k general vectors, so a transpose in the wrong place
would fail the proof.
"""
from __future__ import annotations

import sympy as sp

from mechinterp_edu.derivations.framework import Derivation, Step, symbolic_matrix

D = 3


def _unit_sphere():
    theta, phi = sp.symbols("theta phi", real=True)
    u = sp.Matrix([sp.sin(theta) * sp.cos(phi), sp.sin(theta) * sp.sin(phi), sp.cos(theta)])
    return u, theta, phi


def mean_outer_product() -> sp.Matrix:
    """(1/4π) ∫ u u^T dΩ over the unit sphere of R^3, entry by entry."""
    u, theta, phi = _unit_sphere()
    outer = u * u.T
    return outer.applyfunc(lambda e: sp.integrate(sp.integrate(e * sp.sin(theta), (phi, 0, 2 * sp.pi)),
                                                   (theta, 0, sp.pi)) / (4 * sp.pi))


def _parts():
    xq, xk = symbolic_matrix("xq", 1, D), symbolic_matrix("xk", 1, D)
    B = symbolic_matrix("B", D, D)
    return xq, xk, B


def _expected_term():
    xq, xk, B = _parts()
    E = sp.eye(D) / D                      # = mean_outer_product(), proved in the first step
    return xq * E * B * E * xk.T


def _share_rhs():
    xq, xk, B = _parts()
    return xq * B * xk.T / D ** 2


def _one_draw():
    """(x_q·u)(x_k·m) u^T B m  ==  x_q (u u^T) B (m m^T) x_k^T for fixed symbolic u, m."""
    xq, xk, B = _parts()
    u, m = symbolic_matrix("u", D, 1), symbolic_matrix("m", D, 1)
    lhs = (xq * u)[0, 0] * (xk * m)[0, 0] * (u.T * B * m)
    return lhs, xq * (u * u.T) * B * (m * m.T) * xk.T


NULLS = Derivation(
    name="ioi_scores.nulls",
    title="Chance levels: 1/d for cos², 1/d² for the (q∥)·(k∥) share",
    lesson=5,
    steps=(
        Step("mean_outer_product",
             r"\frac{1}{4\pi}\int_{S^2} u\,u^\top\, d\Omega = \frac{I}{d}\quad(d = 3)",
             mean_outer_product, lambda: sp.eye(D) / D, method="matrix",
             explanation="A uniform direction has no preferred axis: its second moment is I/d. "
                         "Hence E[cos²(v, u)] = v^T (I/d) v / |v|² = 1/d."),
        Step("one_draw",
             r"(x_q\cdot u)(x_k\cdot m)\,u^\top B\,m = x_q\,(u u^\top)\,B\,(m m^\top)\,x_k^\top",
             lambda: _one_draw()[0], lambda: _one_draw()[1], method="matrix",
             explanation="The (q∥u)·(k∥m) term of one draw, written with the two outer products."),
        Step("expected_share",
             r"\mathbb{E}\big[x_q\,(u u^\top)\,B\,(m m^\top)\,x_k^\top\big] = \frac{x_q B x_k^\top}{d^2}",
             _expected_term, _share_rhs, method="matrix",
             explanation="u and m independent: the expectation factorises into I/d on each side, so "
                         "the expected share is 1/d². Its spread is not small: one draw is a product of "
                         "three factors of size about 1/√d each."),
    ),
)
