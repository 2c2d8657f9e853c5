"""Lesson 5: the sympy proof behind the batched decompositions (``reference.decompose_all``).

Not shown on the lesson page (it is engineering, written up in ``docs/lesson5_batched.md``), so it
is not in the lesson's ``DERIVATIONS``; ``tests/test_lesson05_facts.py`` proves every step.
"""
from __future__ import annotations

import sympy as sp

from mechinterp_edu.derivations.framework import Derivation, Step
from mechinterp_edu.lessons.ioi_scores.derivations import (
    D_HEAD, D_MODEL, _centring, _dot, _parallel, _row, _s, _vec, _wk, _wq, ln_frozen,
)


# --------------------------------------------------------------------------- the batched reference
# How mechinterp_edu.lessons.ioi_scores.reference.decompose_all computes every term from a few dot products
# per component. Symbols: c_j are residual components (columns in R^3), u a direction (any length),
# s the frozen scale; in d_head: q the frozen query, k_j = LN*(c_j) W_K a component's key,
# img_u / img_t the images of the two unit directions, a = (sum of query components) . û and
# alpha = c_j . m̂ the coefficients of the parallel parts.
def _sum_of_parallels():
    u = _vec("u")
    cs = [_vec(f"c{i}") for i in range(3)]
    return sum((_parallel(c, u) for c in cs), sp.zeros(D_MODEL, 1)), _parallel(cs[0] + cs[1] + cs[2], u)


def _image_of_parallel():
    s, c, u, WQ = _s(), _vec("c"), _vec("u"), _wq()
    return ln_frozen(_parallel(c, u).T, s) * WQ, _dot(c, u) / _dot(u, u) * (ln_frozen(u.T, s) * WQ)


def _head_rows():
    q, k, img_u, img_t = (_row(n, D_HEAD) for n in ("q", "k", "img_u", "img_t"))
    a, alpha = sp.symbols("a alpha", real=True)
    q_par, k_par = a * img_u, alpha * img_t
    return q, k, img_u, img_t, a, alpha, q_par, q - q_par, k_par, k - k_par


def _q_perp_k_par():
    q, k, img_u, img_t, a, alpha, q_par, q_perp, k_par, k_perp = _head_rows()
    return q_perp * k_par.T, alpha * (img_t * q.T - a * img_t * img_u.T)


def _q_par_k_perp():
    q, k, img_u, img_t, a, alpha, q_par, q_perp, k_par, k_perp = _head_rows()
    return q_par * k_perp.T, a * (img_u * k.T) - a * alpha * (img_t * img_u.T)


def _q_perp_k_perp():
    q, k, img_u, img_t, a, alpha, q_par, q_perp, k_par, k_perp = _head_rows()
    return q_perp * k_perp.T, q * k.T - a * (img_u * k.T) - alpha * (img_t * q.T - a * img_t * img_u.T)


def _pullback_of_a_key():
    s, c, f, WK = _s(), _row("c"), _row("f", D_HEAD), _wk()
    return (ln_frozen(c, s) * WK) * f.T, c * (_centring() * WK * f.T) / s


BATCHED = (Derivation(
    name="ioi_scores.batched",
    title="Every term from a few dot products per component (how the batched reference works)",
    lesson=5,
    steps=(
        Step("sum_of_parallels",
             r"\sum_j (c_j)_\parallel = \Big(\sum_j c_j\Big)_\parallel",
             lambda: _sum_of_parallels()[0], lambda: _sum_of_parallels()[1], method="matrix",
             explanation="Projection is linear: the whole query's parallel part is a_q û with "
                         "a_q = the sum over components of c_j . û."),
        Step("image_of_parallel",
             r"\mathrm{LN}^*\Big(\tfrac{c\cdot u}{u\cdot u}u\Big)W_Q = \tfrac{c\cdot u}{u\cdot u}\,\mathrm{LN}^*(u)W_Q",
             lambda: _image_of_parallel()[0], lambda: _image_of_parallel()[1], method="matrix",
             explanation="A parallel part needs only its coefficient: its image is that coefficient "
                         "times one image of the direction, computed once per prompt."),
        Step("pullback",
             r"\mathrm{LN}^*(c)\,W_K\cdot f = c\cdot\frac{C W_K f^\top}{s}",
             lambda: _pullback_of_a_key()[0], lambda: _pullback_of_a_key()[1], method="matrix",
             explanation="Any frozen d_head vector f becomes one vector on d_model, so a component's "
                         "term is a single dot product with the raw component."),
        Step("q_perp_k_par",
             r"(q - a\,\mathrm{img}_u)\cdot(\alpha\,\mathrm{img}_t) = \alpha\,(\mathrm{img}_t\cdot q"
             r" - a\,\mathrm{img}_t\cdot\mathrm{img}_u)",
             lambda: _q_perp_k_par()[0], lambda: _q_perp_k_par()[1], method="matrix"),
        Step("q_par_k_perp",
             r"a\,\mathrm{img}_u\cdot(k_j - \alpha\,\mathrm{img}_t) = a\,\mathrm{img}_u\cdot k_j"
             r" - a\,\alpha\,\mathrm{img}_t\cdot\mathrm{img}_u",
             lambda: _q_par_k_perp()[0], lambda: _q_par_k_perp()[1], method="matrix"),
        Step("q_perp_k_perp",
             r"q_\perp\cdot k_{j\perp} = q\cdot k_j - a\,\mathrm{img}_u\cdot k_j - \alpha\,(\mathrm{img}_t\cdot q"
             r" - a\,\mathrm{img}_t\cdot\mathrm{img}_u)",
             lambda: _q_perp_k_perp()[0], lambda: _q_perp_k_perp()[1], method="matrix",
             explanation="So each of the four terms of key component j is a per-prompt combination of "
                         "three numbers: q . k_j, img_u . k_j (both dot products with the raw component, "
                         "by the pullback) and alpha = c_j . m̂. The query side is the same with the roles swapped."),
    ),
))
