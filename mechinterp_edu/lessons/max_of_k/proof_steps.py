"""Lesson 4 derivations for the compact proofs: the exact identities and each inequality step the
cubic and subcubic proofs rely on, proven with sympy, each paired with a false variant (a
tempting wrong step) that must fail.

Small symbolic instances: d_vocab 3, n_ctx 2 (the one-hot matrix ``x`` is [n_ctx, d_vocab], not
square, so a product in the wrong order does not even type-check), attention weights with
p_last = 1 - (the others). Inequalities use symbols with sign assumptions, written so that
the claim reduces to "a sum of products of non-negative symbols is non-negative".
"""
from __future__ import annotations

from functools import lru_cache

import sympy as sp

from mechinterp_edu.derivations.framework import Derivation, Step, symbolic_matrix

V, N = 3, 2                                      # d_vocab, n_ctx of the symbolic instance
M_TOKEN, O_TOKEN = 2, 0                          # the max token and one other output token


@lru_cache(maxsize=None)
def _symbols():
    free = symbolic_matrix("x", N, V - 1)
    x = sp.Matrix(N, V, lambda i, j: free[i, j] if j < V - 1 else 1 - sum(free[i, :]))
    p_free = symbolic_matrix("p", 1, N - 1)
    p = sp.Matrix(1, N, lambda i, j: p_free[0, j] if j < N - 1 else 1 - sum(p_free))
    return dict(x=x, p=p, EU=symbolic_matrix("EU", 1, V), EVOU=symbolic_matrix("EVOU", V, V),
                PVOU=symbolic_matrix("PVOU", N, V))


def _e(k: int) -> sp.Matrix:
    return sp.Matrix(V, 1, lambda i, _: 1 if i == k else 0)


def _margin_lhs():
    """logit_m - logit_o from the logits formula (EU row of the query + weighted values)."""
    t = _symbols()
    logits = t["EU"] + t["p"] * (t["x"] * t["EVOU"] + t["PVOU"])      # [1, V]
    return logits * (_e(M_TOKEN) - _e(O_TOKEN))


def _margin_rhs(weights: str = "attention"):
    t = _symbols()
    diff = _e(M_TOKEN) - _e(O_TOKEN)
    values = (t["x"] * t["EVOU"] + t["PVOU"]) * diff                  # v_i(o) [N, 1]
    p = t["p"] if weights == "attention" else sp.ones(1, N) / N        # the false step: uniform weights
    return t["EU"] * diff + p * values


def _folded(weights: str = "softmax"):
    """sum_i p_i (EU[q,m] - EU[q,o] + v_i(o)): the direct path carried by every position."""
    t = _symbols()
    diff = _e(M_TOKEN) - _e(O_TOKEN)
    p = t["p"] if weights == "softmax" else symbolic_matrix("r", 1, N)   # the false step: any weights
    per_position = (t["x"] * t["EVOU"] + t["PVOU"]) * diff + sp.ones(N, 1) * (t["EU"] * diff)
    return p * per_position


_s = sp.symbols("s0:3", real=True)
_A, _B, _d = sp.symbols("A B d", positive=True)               # sums of exponentials, a raise of B
_wlo, _g, _b = sp.symbols("w_lo g b", real=True)
_delta, _gap = sp.symbols("delta e", nonnegative=True)
_p = sp.symbols("p0:3", nonnegative=True)
_q = sp.symbols("q0:3", real=True)                            # signed weights (no softmax)
_beta = sp.symbols("beta0:3", real=True)
_extra = sp.symbols("e0:3", nonnegative=True)
_rho, _a1, _a2 = sp.symbols("rho a1 a2", nonnegative=True)
_umin, _x = sp.symbols("u_min x", real=True)
_du, _xp = sp.symbols("du x_plus", nonnegative=True)
_a, _bb = sp.symbols("a1:3", real=True), sp.symbols("b1:3", real=True)
_m, _c = sp.symbols("m c", integer=True, nonnegative=True)


def _softmax0():
    return sp.exp(_s[0]) / sum(sp.exp(v) for v in _s)


def _count(c, binomial: bool = True):
    """Inputs of 4 tokens with max m whose largest token below m is exactly c."""
    return sum((sp.binomial(4, a) if binomial else 1) * ((c + 1) ** (4 - a) - c ** (4 - a)) for a in range(1, 4))


def _u_times_x(sign: str, u_bound: str):
    """(u_min + du) x - u_bound x for x >= 0 ("plus") or x <= 0 ("minus")."""
    x = _xp if sign == "plus" else -_xp
    u_used = _umin if u_bound == "min" else _umin + _du + _delta   # u_max >= u_q
    return sp.Ge((_umin + _du) * x - u_used * x, 0)


TRUE_STEPS = (
    Step("margin",
         r"\ell_m - \ell_o = (\mathrm{EU}[q,m]-\mathrm{EU}[q,o]) + \sum_i p_i\,v_i(o),\quad "
         r"v_i(o) = \mathrm{EVOU}[x_i,m]-\mathrm{EVOU}[x_i,o]+\mathrm{PVOU}[i,m]-\mathrm{PVOU}[i,o]",
         _margin_lhs, _margin_rhs, method="matrix",
         explanation="The margin of the max token over any other output splits into the direct path and an "
                     "attention-weighted sum of value differences, one per position. Proven for any weights p "
                     "that sum to 1 and any token matrix x whose rows sum to 1."),
    Step("direct_folded",
         r"\ell_m - \ell_o = \sum_i p_i\,\big(\mathrm{EU}[q,m]-\mathrm{EU}[q,o] + v_i(o)\big)\quad(\textstyle\sum_i p_i = 1)",
         _margin_lhs, _folded, method="matrix",
         explanation="Because the attention weights sum to 1, the direct path can be carried by every "
                     "position's term; the cubic proof then bounds each term, direct path included."),
    Step("softmax_monotone",
         r"\frac{\partial p_0}{\partial s_0} > 0,\quad \frac{\partial p_0}{\partial s_1} < 0",
         lambda: sp.And(sp.diff(_softmax0(), _s[0]) > 0, sp.diff(_softmax0(), _s[1]) < 0), method="true",
         explanation="A position's softmax weight rises with its own score and falls when any other score "
                     "rises. So the weight on the max token is smallest when every other score is at its "
                     "largest possible value."),
    Step("attention_floor",
         r"\frac{A}{A+B} > \frac{A}{A+B+d}\quad (A, B, d > 0)",
         lambda: sp.Gt(_A / (_A + _B) - _A / (_A + _B + _d), 0), method="true",
         explanation="With A the exponentials of the max positions and B those of the others, raising B to an "
                     "upper bound B + d only lowers the weight on the max: w_lo computed from the largest "
                     "possible scores of the other tokens is a valid floor."),
    Step("pessimal_ablation",
         r"p_i \ge 0,\ v_i \ge \beta_i \;\Rightarrow\; \sum_i p_i v_i \ge \sum_i p_i \beta_i",
         lambda: sp.Ge(sum(_p[i] * (_beta[i] + _extra[i]) for i in range(3)) - sum(_p[i] * _beta[i] for i in range(3)), 0),
         method="true",
         explanation="Replacing every value by its worst case (the token and output that hurt most) can only "
                     "lower an average with non-negative weights: the pessimal ablation is sound."),
    Step("mix_high_g",
         r"g \ge b,\ w \ge w_{lo}:\ wg + (1-w)b \ge w_{lo}g + (1-w_{lo})b",
         lambda: sp.Ge((_wlo + _delta) * (_b + _gap) + (1 - _wlo - _delta) * _b - (_wlo * (_b + _gap) + (1 - _wlo) * _b), 0),
         method="true",
         explanation="When the max positions' worst value g beats the others' b, more weight on the max helps: "
                     "the worst case is the smallest weight w_lo (w = w_lo + delta, g = b + e)."),
    Step("mix_low_g",
         r"g < b,\ w \le 1:\ wg + (1-w)b \ge g",
         lambda: sp.Ge((1 - _delta) * _g + _delta * (_g + _gap) - _g, 0), method="true",
         explanation="When g < b the worst case is all weight on the max positions (w = 1 - delta, b = g + e). "
                     "Together: the bound is min(g, w_lo g + (1 - w_lo) b)."),
    Step("residual_gap",
         r"|R_{qm}|, |R_{qt}| \le \rho \;\Rightarrow\; R_{qm} - R_{qt} \ge -2\rho",
         lambda: sp.Ge((-_rho + _a1) - (_rho - _a2) + 2 * _rho, 0), method="true",
         explanation="Entries within rho of zero differ by at least -2 rho (R_qm = -rho + a1, R_qt = rho - a2, "
                     "a1, a2 >= 0): the residual costs the score gap at most 2 rho."),
    Step("rank_one_query_floor",
         r"u_q \ge u_{min},\ x \ge 0 \;\Rightarrow\; u_q x \ge u_{min} x",
         lambda: _u_times_x("plus", "min"), method="true",
         explanation="For a key above the others (x = v_m - v_t >= 0) the worst query has the smallest u_q; "
                     "for x <= 0 it has the largest. No query needs to be looked at."),
    Step("cauchy_schwarz",
         r"|a|^2|b|^2 - (a\cdot b)^2 = (a_1b_2 - a_2b_1)^2",
         lambda: (_a[0] ** 2 + _a[1] ** 2) * (_bb[0] ** 2 + _bb[1] ** 2) - (_a[0] * _bb[0] + _a[1] * _bb[1]) ** 2,
         lambda: (_a[0] * _bb[1] - _a[1] * _bb[0]) ** 2,
         explanation="Lagrange's identity (two dimensions): |a.b| <= |a||b|, the only fact the structure-free "
                     "proof uses about a score."),
    Step("group_count",
         r"1 + \sum_{c=0}^{m-1}\sum_{a=1}^{3}\tbinom{4}{a}\big((c+1)^{4-a} - c^{4-a}\big) = (m+1)^4 - m^4",
         lambda: 1 + sp.summation(sp.expand(_count(_c)), (_c, 0, _m - 1)), lambda: (_m + 1) ** 4 - _m ** 4,
         explanation="The groups (max m, largest other token c, a copies of m) cover every input with maximum m "
                     "exactly once: the proofs count inputs, not groups."),
)

FALSE_STEPS = (
    Step("margin",
         r"\ell_m - \ell_o = (\mathrm{EU}[q,m]-\mathrm{EU}[q,o]) + \tfrac{1}{n}\sum_i v_i(o)",
         _margin_lhs, lambda: _margin_rhs("uniform"), method="matrix",
         explanation="Averaging the values uniformly ignores the attention: the margin depends on p."),
    Step("direct_folded",
         r"\ell_m - \ell_o = \sum_i r_i\,\big(\mathrm{EU}[q,m]-\mathrm{EU}[q,o] + v_i(o)\big)\ \text{for any weights } r",
         _margin_lhs, lambda: _folded("any"), method="matrix",
         explanation="Without weights that sum to 1 the direct path is counted sum_i r_i times, not once."),
    Step("softmax_monotone",
         r"\frac{\partial p_0}{\partial s_1} > 0",
         lambda: sp.diff(_softmax0(), _s[1]) > 0, method="true",
         explanation="Raising another score never raises p_0."),
    Step("attention_floor",
         r"\frac{A}{A+B} \ge \frac{A}{A+B-d}",
         lambda: sp.Ge(_A / (_A + _B) - _A / (_A + _B - _d), 0), method="true",
         explanation="The optimistic floor: the other scores at their smallest. It overstates w."),
    Step("pessimal_ablation",
         r"\text{signed weights } q_i:\ \sum_i q_i v_i \ge \sum_i q_i \beta_i",
         lambda: sp.Ge(sum(_q[i] * (_beta[i] + _extra[i]) for i in range(3)) - sum(_q[i] * _beta[i] for i in range(3)), 0),
         method="true",
         explanation="Without the softmax's non-negative weights the worst-case values bound nothing."),
    Step("mix_high_g",
         r"g < b:\ wg + (1-w)b \ge w_{lo}g + (1-w_{lo})b",
         lambda: sp.Ge((_wlo + _delta) * (_b - _gap) + (1 - _wlo - _delta) * _b - (_wlo * (_b - _gap) + (1 - _wlo) * _b), 0),
         method="true",
         explanation="Always taking w = w_lo is unsound when the max positions' value is the worse one."),
    Step("mix_low_g",
         r"g < b:\ wg + (1-w)b \ge b",
         lambda: sp.Ge((1 - _delta) * _g + _delta * (_g + _gap) - (_g + _gap), 0), method="true",
         explanation="Taking the better value b as the floor is unsound."),
    Step("residual_gap",
         r"R_{qm} - R_{qt} \ge -\rho",
         lambda: sp.Ge((-_rho + _a1) - (_rho - _a2) + _rho, 0), method="true",
         explanation="One rho is not enough: both entries can move, in opposite directions."),
    Step("rank_one_query_floor",
         r"x \le 0 \;\Rightarrow\; u_q x \ge u_{min} x",
         lambda: _u_times_x("minus", "min"), method="true",
         explanation="For a key below another the smallest u_q is the best case, not the worst."),
    Step("cauchy_schwarz",
         r"|a|^2|b|^2 - (a\cdot b)^2 = (a_1b_1 - a_2b_2)^2",
         lambda: (_a[0] ** 2 + _a[1] ** 2) * (_bb[0] ** 2 + _bb[1] ** 2) - (_a[0] * _bb[0] + _a[1] * _bb[1]) ** 2,
         lambda: (_a[0] * _bb[0] - _a[1] * _bb[1]) ** 2,
         explanation="The wrong pairing of components."),
    Step("group_count",
         r"1 + \sum_{c}\sum_{a}\big((c+1)^{4-a} - c^{4-a}\big) = (m+1)^4 - m^4",
         lambda: 1 + sp.summation(sp.expand(_count(_c, binomial=False)), (_c, 0, _m - 1)),
         lambda: (_m + 1) ** 4 - _m ** 4,
         explanation="Forgetting where the copies of m sit (the binomial factor) undercounts."),
)

PROOFS = Derivation(
    name="max_of_k.proofs",
    title="The steps the compact proofs rely on",
    lesson=4,
    steps=TRUE_STEPS,
)

PROOFS_FALSE = Derivation(
    name="max_of_k.proofs_false",
    title="Tempting wrong steps (each must fail)",
    lesson=4,
    steps=FALSE_STEPS,
)
