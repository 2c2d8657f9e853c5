"""Lesson 5 derivations: the attention score as a bilinear form, LayerNorm, baselines, projections.

Small explicit sizes keep sympy fast: d_model = 3, d_head = 2, row vectors. ``LN*`` is
LayerNorm with its scale ``s`` frozen (a symbol): LN*(x) = x C / s with the centring matrix
C = I - 11^T/d. All steps prove; the false steps the lesson warns about (recomputing LayerNorm
per component, the 1/d^2 chance level) are exercised in the tests, where they must fail.
"""
from __future__ import annotations

import sympy as sp

from mechinterp_edu.course import collector
from mechinterp_edu.derivations.framework import Derivation, Step, symbolic_matrix

DERIVATIONS: list[Derivation] = []
register = collector(DERIVATIONS)

D_MODEL, D_HEAD = 3, 2


def _row(name: str, n: int = D_MODEL) -> sp.Matrix:
    return symbolic_matrix(name, 1, n)


def _centring(d: int = D_MODEL) -> sp.Matrix:
    return sp.eye(d) - sp.ones(d, d) / d


def _s(name: str = "s") -> sp.Symbol:
    return sp.Symbol(name, positive=True)


def ln_frozen(x: sp.Matrix, s: sp.Symbol) -> sp.Matrix:
    """LayerNorm with a frozen scale: centre, then divide by s (linear in x)."""
    return x * _centring(x.shape[1]) / s


def ln_recomputed(x: sp.Matrix) -> sp.Matrix:
    """LayerNorm computed from x itself (eps = 0, folded gain/bias): not linear in x."""
    c = x * _centring(x.shape[1])
    return c / sp.sqrt((c * c.T)[0, 0] / x.shape[1])


def _wq():
    return symbolic_matrix("WQ", D_MODEL, D_HEAD)


def _wk():
    return symbolic_matrix("WK", D_MODEL, D_HEAD)


def _bq():
    return _row("bQ", D_HEAD)


def _bk():
    return _row("bK", D_HEAD)


# --------------------------------------------------------------------------- bilinear score
def _score(xq, xk):
    return (xq * _wq() + _bq()) * (xk * _wk() + _bk()).T


def _expanded():
    xq, xk, WQ, WK, bQ, bK = _row("xq"), _row("xk"), _wq(), _wk(), _bq(), _bk()
    return xq * WQ * WK.T * xk.T + xq * WQ * bK.T + bQ * WK.T * xk.T + bQ * bK.T


def _linear_in_keys():
    q, xk, WK, bK = _row("q", D_HEAD), _row("xk"), _wk(), _bk()
    return q * (xk * WK + bK).T, xk * (WK * q.T) + q * bK.T


def _linear_in_queries():
    k, xq, WQ, bQ = _row("k", D_HEAD), _row("xq"), _wq(), _bq()
    return (xq * WQ + bQ) * k.T, xq * (WQ * k.T) + bQ * k.T


def _components_add_up():
    s = _s()
    q, WK, bK = _row("q", D_HEAD), _wk(), _bk()
    c = [_row(f"c{i}") for i in range(3)]
    whole = q * (ln_frozen(c[0] + c[1] + c[2], s) * WK + bK).T
    parts = sum((q * (ln_frozen(ci, s) * WK).T for ci in c), sp.zeros(1, 1)) + q * bK.T
    return whole, parts


def _centring_on_the_map():
    s = _s()
    x, r = _row("x"), _row("r")
    P = _centring()
    return ln_frozen(x, s) * r.T, x * (P * r.T) / s


register(Derivation(
    name="ioi_scores.bilinear",
    title="The attention score is bilinear; freeze one side and it is linear in the other",
    lesson=5,
    steps=(
        Step("expand",
             r"(x_q W_Q + b_Q)(x_k W_K + b_K)^\top = x_q W_Q W_K^\top x_k^\top + x_q W_Q b_K^\top"
             r" + b_Q W_K^\top x_k^\top + b_Q b_K^\top",
             lambda: _score(_row("xq"), _row("xk")), _expanded, method="matrix",
             explanation="Four terms: the bilinear one, and three that involve a bias. "
                         "(The score also divides by sqrt(d_head); a constant factor changes nothing here.)"),
        Step("linear_in_keys",
             r"q\,(x_k W_K + b_K)^\top = x_k\,(W_K q^\top) + q\, b_K^\top",
             lambda: _linear_in_keys()[0], lambda: _linear_in_keys()[1], method="matrix",
             explanation="With the query q frozen the score is an affine function of the key-side "
                         "residual: a linear map W_K q^T plus the bias term q b_K^T."),
        Step("linear_in_queries",
             r"(x_q W_Q + b_Q)\,k^\top = x_q\,(W_Q k^\top) + b_Q\, k^\top",
             lambda: _linear_in_queries()[0], lambda: _linear_in_queries()[1], method="matrix",
             explanation="With the key k frozen: linear map W_Q k^T, bias term b_Q k^T."),
        Step("components_add_up",
             r"q\,\big(\mathrm{LN}^*(c_0+c_1+c_2) W_K + b_K\big)^\top = "
             r"\sum_i q\,(\mathrm{LN}^*(c_i) W_K)^\top + q\,b_K^\top",
             lambda: _components_add_up()[0], lambda: _components_add_up()[1], method="matrix",
             explanation="With the LayerNorm scale s frozen, LN*(x) = xP/s is linear, so each residual "
                         "component gets its own term and the terms (plus the bias) add up to the score."),
        Step("centring_on_the_map",
             r"\mathrm{LN}^*(x)\cdot r = x \cdot (C r^\top) / s",
             lambda: _centring_on_the_map()[0], lambda: _centring_on_the_map()[1], method="matrix",
             explanation="P is symmetric, so the centring can be moved onto the linear map: the map on "
                         "the raw residual is (r - mean(r)) / s."),
    ),
))


# --------------------------------------------------------------------------- LayerNorm
def _recompute_counterexample():
    c1 = sp.Matrix([[1, 0, 0]])
    c2 = sp.Matrix([[0, 2, 0]])
    difference = ln_recomputed(c1 + c2) - (ln_recomputed(c1) + ln_recomputed(c2))
    return sp.Ne(sp.nsimplify(difference[0, 0]), 0)


def _scale_invariance():
    lam = sp.Symbol("lambda", positive=True)
    x = _row("x")
    return ln_recomputed(lam * x), ln_recomputed(x)


register(Derivation(
    name="ioi_scores.layernorm",
    title="LayerNorm is linear only with its scale frozen",
    lesson=5,
    steps=(
        Step("frozen_scale_is_linear",
             r"\mathrm{LN}^*(c_1 + c_2) = \mathrm{LN}^*(c_1) + \mathrm{LN}^*(c_2)",
             lambda: ln_frozen(_row("a") + _row("b"), _s()),
             lambda: ln_frozen(_row("a"), _s()) + ln_frozen(_row("b"), _s()), method="matrix",
             explanation="Centring is linear and s is one number read from the cache, so LN* is linear."),
        Step("recomputed_is_not_additive",
             r"\mathrm{LN}\big((1,0,0)+(0,2,0)\big) \ne \mathrm{LN}(1,0,0) + \mathrm{LN}(0,2,0)",
             _recompute_counterexample, method="true",
             explanation="Recomputing LayerNorm per component divides each piece by its own scale; "
                         "the pieces then no longer add up to the normalised sum."),
        Step("scale_invariant",
             r"\mathrm{LN}(\lambda x) = \mathrm{LN}(x), \quad \lambda > 0",
             lambda: _scale_invariance()[0], lambda: _scale_invariance()[1], method="simplify",
             explanation="A vector substituted for the WHOLE residual stream (W_U[IO] for the query) "
                         "goes through a LayerNorm of its own: only its direction matters."),
    ),
))


# --------------------------------------------------------------------------- baselines
def _b_k_cancels():
    q, WK, bK, xa, xb = _row("q", D_HEAD), _wk(), _bk(), _row("xIO"), _row("xS1")
    lhs = q * (xa * WK + bK).T - q * (xb * WK + bK).T
    return lhs, q * ((xa - xb) * WK).T


def _scales_differ():
    b, s1, s2 = _row("b"), _s("s_IO"), _s("s_S1")
    lhs = ln_frozen(b, s1) - ln_frozen(b, s2)
    return lhs, b * _centring() * (s2 - s1) / (s1 * s2)


def _b_q_stays():
    kio, ks1, xq, WQ, bQ = _row("kIO", D_HEAD), _row("kS1", D_HEAD), _row("xE"), _wq(), _bq()
    lhs = (xq * WQ + bQ) * kio.T - (xq * WQ + bQ) * ks1.T
    return lhs, (xq * WQ) * (kio - ks1).T + bQ * (kio - ks1).T


def _b_q_nonzero_example():
    value = (sp.Matrix([[1, 2]]) * (sp.Matrix([[3, 1]]) - sp.Matrix([[1, 1]])).T)[0, 0]
    return sp.Ne(value, 0)


register(Derivation(
    name="ioi_scores.baseline",
    title="Subtracting the S1 baseline: b_K cancels, nothing else does",
    lesson=5,
    steps=(
        Step("b_K_cancels",
             r"q(x_{IO} W_K + b_K)^\top - q(x_{S1} W_K + b_K)^\top = q\,\big((x_{IO}-x_{S1}) W_K\big)^\top",
             lambda: _b_k_cancels()[0], lambda: _b_k_cancels()[1], method="matrix",
             explanation="The key bias is the same vector at every position, so the frozen query's "
                         "bias term q b_K^T appears in both scores and cancels exactly."),
        Step("scales_differ",
             r"\mathrm{LN}^*_{IO}(b) - \mathrm{LN}^*_{S1}(b) = bC\,\frac{s_{S1}-s_{IO}}{s_{IO}s_{S1}}",
             lambda: _scales_differ()[0], lambda: _scales_differ()[1], method="matrix",
             explanation="A bias written into the residual stream (b_O, an MLP's output bias) is the same "
                         "vector at IO and S1, but each position divides by its own LayerNorm scale: "
                         "it cancels only if the scales are equal. Positional embeddings differ outright."),
        Step("b_Q_stays",
             r"(x_E W_Q + b_Q)(k_{IO} - k_{S1})^\top = x_E W_Q (k_{IO}-k_{S1})^\top + b_Q (k_{IO}-k_{S1})^\top",
             lambda: _b_q_stays()[0], lambda: _b_q_stays()[1], method="matrix",
             explanation="On the query side the frozen key becomes k_IO - k_S1 and the bias term "
                         "b_Q (k_IO - k_S1)^T stays."),
        Step("b_Q_term_example",
             r"b_Q = (1,2),\ k_{IO}-k_{S1} = (2,0):\quad b_Q (k_{IO}-k_{S1})^\top = 2 \ne 0",
             _b_q_nonzero_example, method="true",
             explanation="One instance is enough to show the b_Q term does not vanish in general."),
    ),
))


# --------------------------------------------------------------------------- projections
def _vec(name: str) -> sp.Matrix:
    return sp.Matrix(D_MODEL, 1, lambda i, _: sp.Symbol(f"{name}_{i}", real=True))


def _dot(a: sp.Matrix, b: sp.Matrix):
    return (a.T * b)[0, 0]


def _parallel(v, u):
    return _dot(v, u) / _dot(u, u) * u


def _projector(D: sp.Matrix) -> sp.Matrix:
    return D.T * (D * D.T).inv() * D


def _directions() -> sp.Matrix:
    return sp.Matrix([[1, sp.Symbol("a", real=True), 0], [0, 1, sp.Symbol("c", real=True)]])


def _sphere_mean_cos2():
    theta, phi = sp.symbols("theta phi", real=True)
    integral = sp.integrate(sp.cos(theta) ** 2 * sp.sin(theta), (theta, 0, sp.pi), (phi, 0, 2 * sp.pi))
    return integral / (4 * sp.pi)


register(Derivation(
    name="ioi_scores.projection",
    title="Projections, fraction of squared norm explained, and chance level",
    lesson=5,
    steps=(
        Step("orthogonal",
             r"v_\parallel \cdot (v - v_\parallel) = 0,\quad v_\parallel = \frac{v\cdot u}{u\cdot u}\,u",
             lambda: _dot(_parallel(_vec("v"), _vec("u")), _vec("v") - _parallel(_vec("v"), _vec("u"))),
             explanation="Dividing by u.u makes the formula correct for a direction of any length."),
        Step("pythagoras",
             r"|v|^2 = |v_\parallel|^2 + |v_\perp|^2",
             lambda: _dot(_vec("v"), _vec("v")),
             lambda: (_dot(_parallel(_vec("v"), _vec("u")), _parallel(_vec("v"), _vec("u")))
                      + _dot(_vec("v") - _parallel(_vec("v"), _vec("u")),
                             _vec("v") - _parallel(_vec("v"), _vec("u")))),
             explanation="So |v_par|^2/|v|^2 and |v_perp|^2/|v|^2 are fractions that add to 1."),
        Step("fraction_is_cos2",
             r"\frac{|v_\parallel|^2}{|v|^2} = \cos^2(v, u) = \frac{(v\cdot u)^2}{|u|^2|v|^2}",
             lambda: _dot(_parallel(_vec("v"), _vec("u")), _parallel(_vec("v"), _vec("u"))) / _dot(_vec("v"), _vec("v")),
             lambda: _dot(_vec("v"), _vec("u")) ** 2 / (_dot(_vec("u"), _vec("u")) * _dot(_vec("v"), _vec("v"))),
             explanation="The fraction explained for one vector is its squared cosine; over a batch "
                         "the statistic is the mean of cos^2."),
        Step("unnormalised_direction",
             r"(v\cdot u)\,u = |u|^2\, v_\parallel",
             lambda: _dot(_vec("v"), _vec("u")) * _vec("u"),
             lambda: _dot(_vec("u"), _vec("u")) * _parallel(_vec("v"), _vec("u")), method="matrix",
             explanation="Forgetting to normalise u scales the 'projection' by |u|^2."),
        Step("projector_idempotent",
             r"\Pi_D = D^\top (D D^\top)^{-1} D:\quad \Pi_D^2 = \Pi_D",
             lambda: _projector(_directions()) ** 2, lambda: _projector(_directions()),
             explanation="Projection onto the span of k (not necessarily orthogonal) directions, the rows of D."),
        Step("projector_trace",
             r"\operatorname{tr} \Pi_D = k = 2",
             lambda: _projector(_directions()).trace(), lambda: sp.Integer(2),
             explanation="A projector's trace is the dimension it projects onto."),
        Step("chance_k_over_d",
             r"\mathbb{E}\Big[\frac{v^\top \Pi_D v}{|v|^2}\Big] = \operatorname{tr}\big(\Pi_D\,\tfrac{I}{d}\big) = \frac{k}{d}",
             lambda: (_projector(_directions()) * sp.eye(D_MODEL) / D_MODEL).trace(),
             lambda: sp.Rational(2, D_MODEL),
             explanation="For a direction uniform on the sphere E[v v^T/|v|^2] = I/d, so k random "
                         "directions explain k/d of the squared norm on average (1/d for one), not 1/d^2."),
        Step("chance_on_the_sphere",
             r"\frac{1}{4\pi}\int_{S^2} \cos^2\theta \, d\Omega = \frac{1}{3} = \frac{1}{d}",
             _sphere_mean_cos2, lambda: sp.Rational(1, 3),
             explanation="The same result by direct integration in d = 3."),
        Step("mean_abs_cos_squared_is_smaller",
             r"\frac{a^2+b^2}{2} - \Big(\frac{a+b}{2}\Big)^2 = \frac{(a-b)^2}{4} \ge 0",
             lambda: (sp.Symbol("a", nonnegative=True) ** 2 + sp.Symbol("b", nonnegative=True) ** 2) / 2
             - ((sp.Symbol("a", nonnegative=True) + sp.Symbol("b", nonnegative=True)) / 2) ** 2,
             lambda: (sp.Symbol("a", nonnegative=True) - sp.Symbol("b", nonnegative=True)) ** 2 / 4,
             explanation="With a, b the |cos| of two vectors: (mean |cos|)^2 is below mean cos^2 unless "
                         "all |cos| are equal, so it is not the fraction explained."),
    ),
))


# --------------------------------------------------------------------------- four terms and the grid
def _four_way():
    qp, qo, kp, ko = (_row(n, D_HEAD) for n in ("qpar", "qperp", "kpar", "kperp"))
    return (qp + qo) * (kp + ko).T, qp * kp.T + qp * ko.T + qo * kp.T + qo * ko.T


def _bias_in_perp():
    s = _s()
    x, u, WQ, bQ = _vec("x"), _vec("u"), _wq(), _bq()
    par = _parallel(x, u).T
    perp = x.T - par
    return ln_frozen(par, s) * WQ + (ln_frozen(perp, s) * WQ + bQ), ln_frozen(x.T, s) * WQ + bQ


def _baseline_four():
    s1, s2 = _s("s_IO"), _s("s_S1")
    WK, bK = _wk(), _bk()
    pio, oio, ps1, os1 = (_row(n) for n in ("pIO", "oIO", "pS1", "oS1"))
    k_perp_diff = (ln_frozen(oio, s1) * WK + bK) - (ln_frozen(os1, s2) * WK + bK)
    return k_perp_diff, ln_frozen(oio, s1) * WK - ln_frozen(os1, s2) * WK


def _grid_sums():
    qs = [_row(f"q{i}", D_HEAD) for i in range(2)]
    ks = [_row(f"k{j}", D_HEAD) for j in range(3)]
    total = sum(((qi * kj.T) for qi in qs for kj in ks), sp.zeros(1, 1))
    return total, (qs[0] + qs[1]) * (ks[0] + ks[1] + ks[2]).T


register(Derivation(
    name="ioi_scores.four_terms",
    title="The four-term split and the full component grid",
    lesson=5,
    steps=(
        Step("four_way",
             r"(q_\parallel + q_\perp)\cdot(k_\parallel + k_\perp) = q_\parallel k_\parallel + q_\parallel k_\perp"
             r" + q_\perp k_\parallel + q_\perp k_\perp",
             lambda: _four_way()[0], lambda: _four_way()[1], method="matrix",
             explanation="Split each side in two and expand: four terms that add to the score."),
        Step("bias_goes_with_perp",
             r"\mathrm{LN}^*(x_\parallel) W_Q + \big(\mathrm{LN}^*(x_\perp) W_Q + b_Q\big) = \mathrm{LN}^*(x) W_Q + b_Q",
             lambda: _bias_in_perp()[0], lambda: _bias_in_perp()[1], method="matrix",
             explanation="Putting b_Q in the perpendicular part keeps the parallel part purely 'the "
                         "residual stream along u', and the query is still split exactly."),
        Step("baseline_cancels_b_K_in_perp",
             r"k_{\perp,IO} - k_{\perp,S1} = \mathrm{LN}^*_{IO}(x^{\perp}_{IO}) W_K - \mathrm{LN}^*_{S1}(x^{\perp}_{S1}) W_K",
             lambda: _baseline_four()[0], lambda: _baseline_four()[1], method="matrix",
             explanation="With the baseline, b_K (kept in the perpendicular key part) cancels there too."),
        Step("grid_sums_to_score",
             r"\sum_{i,j} q_i \cdot k_j = \Big(\sum_i q_i\Big)\cdot\Big(\sum_j k_j\Big)",
             lambda: _grid_sums()[0], lambda: _grid_sums()[1], method="matrix",
             explanation="The query-component x key-component grid (bias row and column included) sums "
                         "to the score."),
    ),
))


# --------------------------------------------------------------------------- false steps
# Not registered (every registered step must prove). Each states a tempting claim that is wrong;
# the tests check that the framework rejects every one, and the lesson shows their verdicts.
def _xy():
    x, y = sp.symbols("x y", positive=True)
    return sp.Matrix([[x, 0, 0]]), sp.Matrix([[0, y, 0]])


FALSE_STEPS: dict[str, Step] = {
    "recompute_per_component": Step(
        "recompute_per_component",
        r"\mathrm{LN}\big((x,0,0) + (0,y,0)\big) \overset{?}{=} \mathrm{LN}(x,0,0) + \mathrm{LN}(0,y,0)",
        lambda: ln_recomputed(_xy()[0] + _xy()[1]),
        lambda: ln_recomputed(_xy()[0]) + ln_recomputed(_xy()[1]), method="simplify",
        explanation="False: LayerNorm recomputed on each component divides each by its own scale."),
    "chance_one_over_d_squared": Step(
        "chance_one_over_d_squared",
        r"\frac{1}{4\pi}\int_{S^2}\cos^2\theta\,d\Omega \overset{?}{=} \frac{1}{d^2} = \frac{1}{9}",
        _sphere_mean_cos2, lambda: sp.Rational(1, D_MODEL ** 2),
        explanation="False: the chance level of one random direction is 1/d, not 1/d^2."),
    "mean_abs_cos_squared": Step(
        "mean_abs_cos_squared",
        r"\Big(\frac{|a|+|b|}{2}\Big)^2 \overset{?}{=} \frac{a^2+b^2}{2}",
        lambda: ((sp.Symbol("a", nonnegative=True) + sp.Symbol("b", nonnegative=True)) / 2) ** 2,
        lambda: (sp.Symbol("a", nonnegative=True) ** 2 + sp.Symbol("b", nonnegative=True) ** 2) / 2,
        explanation="False unless a = b: (mean |cos|)^2 is not the mean of cos^2."),
    "b_Q_cancels": Step(
        "b_Q_cancels",
        r"(x_E W_Q + b_Q)(k_{IO}-k_{S1})^\top \overset{?}{=} x_E W_Q (k_{IO}-k_{S1})^\top",
        lambda: _b_q_stays()[0], lambda: (_row("xE") * _wq()) * (_row("kIO", D_HEAD) - _row("kS1", D_HEAD)).T,
        method="matrix",
        explanation="False: the baseline removes b_K on the key side, not b_Q on the query side."),
    "residual_bias_cancels": Step(
        "residual_bias_cancels",
        r"\mathrm{LN}^*_{IO}(b) - \mathrm{LN}^*_{S1}(b) \overset{?}{=} 0",
        lambda: _scales_differ()[0], lambda: sp.zeros(1, D_MODEL), method="matrix",
        explanation="False: the same bias vector is divided by two different LayerNorm scales."),
}


# --------------------------------------------------------------------------- nulls
from mechinterp_edu.lessons.ioi_scores.null_derivations import NULLS  # noqa: E402

register(NULLS)
