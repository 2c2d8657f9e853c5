"""Lesson 4 derivations: the QK / OV / direct-path tables of a max-of-K model, proven with sympy.

Small symbolic instances stand in for the real sizes: d_vocab 3, n_ctx 2, d_model = d_head = 2.
The token matrix ``x`` [n_ctx, d_vocab] is *any* matrix whose rows each sum to 1 (its last
column is one minus the others), so every identity proven for it holds in particular for
every one-hot matrix. ``s`` stands for sqrt(d_head).

``FALSE_STEPS`` holds the notes' steps that do not hold (taking x^{-1} of a one-hot matrix,
dropping the query's position); they are not registered, and the tests check that they fail.
"""
from __future__ import annotations

from functools import lru_cache

import sympy as sp

from mechinterp_edu.course import collector
from mechinterp_edu.derivations.framework import (
    Derivation,
    Step,
    one_hot_matrix,
    softmax,
    symbolic_matrix,
)

DERIVATIONS: list[Derivation] = []
register = collector(DERIVATIONS)

V, N, D = 3, 2, 2          # d_vocab, n_ctx, d_model = d_head in the symbolic instance


@lru_cache(maxsize=None)
def _symbols(V: int = V, N: int = N, D: int = D):
    E = symbolic_matrix("E", V, D)
    P = symbolic_matrix("P", N, D)
    Q = symbolic_matrix("Q", D, D)
    K = symbolic_matrix("K", D, D)
    Vm = symbolic_matrix("V", D, D)
    O = symbolic_matrix("O", D, D)
    U = symbolic_matrix("U", D, V)
    s = sp.Symbol("s", positive=True)                    # sqrt(d_head)
    free = symbolic_matrix("x", N, V - 1)
    # Rows sum to one: covers every one-hot token matrix (and more).
    x = sp.Matrix(N, V, lambda i, j: free[i, j] if j < V - 1 else 1 - sum(free[i, :]))
    ones_v = sp.ones(V, 1)
    ones_n = sp.ones(N, 1)
    P_avg = (ones_n.T * P) / N                           # [1, D]
    P_hat = P - ones_n * P_avg                           # [N, D]
    E_bar = E + ones_v * P_avg                           # [V, D]
    E_q = E + ones_v * P[N - 1, :]                       # [V, D]
    x_q = x[N - 1, :]                                    # [1, V]: the query is the last token
    return dict(E=E, P=P, Q=Q, K=K, V=Vm, O=O, U=U, s=s, x=x, x_q=x_q, ones_v=ones_v, ones_n=ones_n,
                P_avg=P_avg, P_hat=P_hat, E_bar=E_bar, E_q=E_q)


def _tables(*sizes):
    t = _symbols(*sizes)
    QK = t["Q"] * t["K"].T
    OVU = t["V"] * t["O"] * t["U"]
    return dict(
        EQKE=t["E_q"] * QK * t["E_bar"].T / t["s"],
        EQKP=t["E_q"] * QK * t["P_hat"].T / t["s"],
        EU=t["E_q"] * t["U"],
        EVOU=t["E_bar"] * OVU,
        PVOU=t["P_hat"] * OVU,
    )


def _model_scores(*sizes):
    """The model's last-position scores, computed the way the forward pass does: [1, n_ctx]."""
    t = _symbols(*sizes)
    resid = t["x"] * t["E"] + t["P"]
    q = resid[resid.rows - 1, :] * t["Q"]
    k = resid * t["K"]
    return q * k.T / t["s"]


def _table_scores(*sizes):
    t, c = _symbols(*sizes), _tables(*sizes)
    return t["x_q"] * c["EQKE"] * t["x"].T + t["x_q"] * c["EQKP"]


_g = sp.Function("g")   # any entrywise score -> weight map; softmax is g = exp, then normalise


LOGITS_SIZES = (2, 2, 2)   # the end-to-end step uses an even smaller instance (d_vocab 2)


def _model_logits():
    t = _symbols(*LOGITS_SIZES)
    resid = t["x"] * t["E"] + t["P"]
    scores = _model_scores(*LOGITS_SIZES)
    weights = sp.Matrix(1, scores.cols, lambda i, j: _g(scores[0, j]))
    pattern = weights / sum(weights)
    return (resid[resid.rows - 1, :] + pattern * resid * t["V"] * t["O"]) * t["U"]


def _table_logits():
    t, c = _symbols(*LOGITS_SIZES), _tables(*LOGITS_SIZES)
    scores = _table_scores(*LOGITS_SIZES)
    weights = sp.Matrix(1, scores.cols, lambda i, j: _g(sp.expand(scores[0, j])))
    pattern = weights / sum(weights)
    return t["x_q"] * c["EU"] + pattern * (t["x"] * c["EVOU"] + c["PVOU"])


def _all_one_hot_rows_sum_to_one():
    checks = []
    for tokens in [(a, b) for a in range(V) for b in range(V)]:
        x = one_hot_matrix(list(tokens), V)
        checks.append(sp.Eq(x * sp.ones(V, 1), sp.ones(N, 1)))
    return sp.And(*checks)


CIRCUITS = register(Derivation(
    name="max_of_k.circuits",
    title="From the forward pass to EQKE, EQKP, EU, EVOU and PVOU",
    lesson=4,
    steps=(
        Step("onehot_rowsum",
             r"x\,\mathbf{1}_{d_{vocab}} = \mathbf{1}_{n_{ctx}} \text{ for every one-hot } x",
             _all_one_hot_rows_sum_to_one, method="true",
             explanation="Each row of a one-hot token matrix has a single 1, so its entries sum to 1. "
                         "Checked here on every one-hot matrix of the small instance."),
        Step("constant_row",
             r"x\,(\mathbf{1}_{d_{vocab}} P_{avg}) = \mathbf{1}_{n_{ctx}} P_{avg}",
             lambda: _symbols()["x"] * (_symbols()["ones_v"] * _symbols()["P_avg"]),
             lambda: _symbols()["ones_n"] * _symbols()["P_avg"], method="matrix",
             explanation="The step the notes tried to do with x^{-1}: a row added to every token's "
                         "embedding comes out of the token lookup unchanged, because the rows of x "
                         "sum to 1. No inverse is needed (and none exists)."),
        Step("mean_diff",
             r"P = \mathbf{1}_{n_{ctx}} P_{avg} + \hat P,\quad \mathbf{1}^T \hat P = 0",
             lambda: sp.Matrix.vstack(_symbols()["ones_n"] * _symbols()["P_avg"] + _symbols()["P_hat"],
                                      _symbols()["ones_n"].T * _symbols()["P_hat"]),
             lambda: sp.Matrix.vstack(_symbols()["P"], sp.zeros(1, D)), method="matrix",
             explanation="The positional embeddings split into their mean and deviations that "
                         "average to zero."),
        Step("key_side",
             r"xE + P = x\bar E + \hat P,\quad \bar E = E + P_{avg}",
             lambda: _symbols()["x"] * _symbols()["E"] + _symbols()["P"],
             lambda: _symbols()["x"] * _symbols()["E_bar"] + _symbols()["P_hat"], method="matrix",
             explanation="Mean plus diff, then the row-sum step moves P_avg into a fixed table E_bar."),
        Step("query_side",
             r"x_q E + P_{n_{ctx}-1} = x_q E_q,\quad E_q = E + P_{n_{ctx}-1}",
             lambda: _symbols()["x_q"] * _symbols()["E"] + _symbols()["P"][N - 1, :],
             lambda: _symbols()["x_q"] * _symbols()["E_q"], method="matrix",
             explanation="The query always sits at the last position, so its whole positional "
                         "embedding goes into the query table E_q."),
        Step("scores",
             r"\frac{(x_qE+P_{-1})QK^T(xE+P)^T}{\sqrt{d}} = x_q\,\mathrm{EQKE}\,x^T + x_q\,\mathrm{EQKP}",
             _model_scores, _table_scores, method="matrix",
             explanation="The last position's pre-softmax scores: the score for key i is "
                         "EQKE[x_q, x_i] + EQKP[x_q, i]."),
        Step("ov",
             r"a\,(xE+P)VOU = a\,x\,\mathrm{EVOU} + a\,\mathrm{PVOU}",
             lambda: symbolic_matrix("a", 1, N) * (_symbols()["x"] * _symbols()["E"] + _symbols()["P"])
             * _symbols()["V"] * _symbols()["O"] * _symbols()["U"],
             lambda: symbolic_matrix("a", 1, N) * (_symbols()["x"] * _tables()["EVOU"] + _tables()["PVOU"]),
             method="matrix",
             explanation="Whatever the attention weights a, the OV path reads EVOU[x_i] + PVOU[i]."),
        Step("direct",
             r"(x_qE + P_{-1})U = x_q\,\mathrm{EU}",
             lambda: (_symbols()["x_q"] * _symbols()["E"] + _symbols()["P"][N - 1, :]) * _symbols()["U"],
             lambda: _symbols()["x_q"] * _tables()["EU"], method="matrix",
             explanation="The direct path (the residual stream straight to the unembedding)."),
        Step("logits",
             r"\mathrm{logits} = \mathrm{EU}[x_q] + \sum_i \mathrm{softmax}_i"
             r"(\mathrm{EQKE}[x_q,x_i]+\mathrm{EQKP}[x_q,i])\,(\mathrm{EVOU}[x_i]+\mathrm{PVOU}[i])",
             _model_logits, _table_logits, method="matrix",
             explanation="Putting it together: the model's last-position logits equal the table "
                         "formula. Proven for any entrywise score map g with weights g(s_i)/sum g(s_j), "
                         "softmax (g = exp) included."),
    ),
))


_s = sp.symbols("s0:3", real=True)
_c = sp.Symbol("c", real=True)
_d = sp.Symbol("d", positive=True)
_qk = sp.Symbol("qk", real=True, nonzero=True)
_S = sp.Symbol("S", real=True, nonzero=True)
_sigma, _u, _v, _delta = sp.symbols("sigma u v delta", positive=True)


def _raw_offset_lhs():
    t = _symbols()
    QK = t["Q"] * t["K"].T
    return t["E_q"] * QK * t["P"].T / t["s"] - _tables()["EQKP"]


def _raw_offset_rhs():
    t = _symbols()
    QK = t["Q"] * t["K"].T
    return (t["E_q"] * QK * t["P_avg"].T / t["s"]) * t["ones_n"].T


FACTORS = register(Derivation(
    name="max_of_k.factors",
    title="Where the notes' three symptoms come from",
    lesson=4,
    steps=(
        Step("divide_by_d_head",
             r"\frac{qk/d}{qk/\sqrt d} = \frac{1}{\sqrt d}\;(\approx 0.177 \text{ at } d = 32)",
             lambda: (_qk / _d) / (_qk / sp.sqrt(_d)), lambda: 1 / sp.sqrt(_d),
             explanation="Dividing scores by d_head instead of sqrt(d_head) shrinks EQKE and EQKP by "
                         "1/sqrt(d_head): 0.177 for d_head = 32."),
        Step("sqrt_d_training",
             r"\text{trained on } qk\sqrt d = S \;\Rightarrow\; \frac{qk}{\sqrt d} = \frac{S}{d}",
             lambda: (_S / sp.sqrt(_d)) / sp.sqrt(_d), lambda: _S / _d,
             explanation="A model trained with scores multiplied by sqrt(d) reaches scores S with a QK "
                         "product d times smaller than a correct model needs; read correctly it shows "
                         "S/d (1/32 if it reached the same scores; training dynamics change the rest)."),
        Step("raw_pos_offset",
             r"\frac{E_qQK^TP^T}{\sqrt d} - \mathrm{EQKP} = \frac{E_qQK^TP_{avg}^T}{\sqrt d}\,\mathbf{1}^T",
             _raw_offset_lhs, _raw_offset_rhs, method="matrix",
             explanation="Using raw W_pos in EQKP adds, to each query row, one constant (the same for "
                         "every key position): the P_avg part is counted twice, once in E_bar."),
        Step("softmax_shift",
             r"\mathrm{softmax}(s + c\mathbf{1}) = \mathrm{softmax}(s)",
             lambda: softmax([v + _c for v in _s]), lambda: softmax(list(_s)),
             explanation="Softmax ignores a constant added to every score of a row, so the raw-W_pos "
                         "EQKP gives the same pattern and the same logits: a logits-only check misses it."),
        Step("rank_one_order",
             r"\sigma u_q (v_j + \delta) > \sigma u_q v_j \text{ for } \sigma, u_q, \delta > 0",
             lambda: sp.Gt(_sigma * _u * (_v + _delta) - _sigma * _u * _v, 0), method="true",
             explanation="If EQKE = sigma u v^T with a size direction v increasing in the key token and "
                         "u > 0, every query scores a larger key higher: attention goes to the max."),
    ),
))


# --------------------------------------------------------------------------- the notes' false steps
def _pinv_of(tokens):
    return one_hot_matrix(list(tokens), V).pinv()


FALSE_STEPS = Derivation(
    name="max_of_k.notes",
    title="The notes' steps that do not hold (each must fail)",
    lesson=4,
    steps=(
        Step("x_inverse",
             r"x\,x^{-1} = I \text{ for a one-hot } x \text{ (tokens 1, 1)}",
             lambda: one_hot_matrix([1, 1], V) * _pinv_of((1, 1)), lambda: sp.eye(N), method="matrix",
             explanation="A one-hot matrix is not square, so it has no inverse; with a repeated token it "
                         "has not even a right inverse (this uses the pseudo-inverse, the best candidate)."),
        Step("x_inverse_table",
             r"E + x^{-1}\mathbf{1}P_{avg} \text{ is the same table for tokens (0, 1) and (2, 0)}",
             lambda: _symbols()["E"] + _pinv_of((0, 1)) * _symbols()["ones_n"] * _symbols()["P_avg"],
             lambda: _symbols()["E"] + _pinv_of((2, 0)) * _symbols()["ones_n"] * _symbols()["P_avg"],
             method="matrix",
             explanation="Even where a pseudo-inverse exists, the notes' E_bar = E + x^{-1}P_avg changes "
                         "with the input: it is not a table one can precompute. E + 1 P_avg is."),
        Step("drop_query_position",
             r"x_q E\,QK^T = (x_qE + P_{-1})\,QK^T",
             lambda: _symbols()["x_q"] * _symbols()["E"] * _symbols()["Q"] * _symbols()["K"].T,
             lambda: (_symbols()["x_q"] * _symbols()["E"] + _symbols()["P"][N - 1, :])
             * _symbols()["Q"] * _symbols()["K"].T,
             method="matrix",
             explanation="Dropping the query's positional embedding loses a term; it is not zero."),
    ),
)


# The compact proofs' steps (their false variants: proof_steps.PROOFS_FALSE, checked by the tests).
from mechinterp_edu.lessons.max_of_k.proof_steps import PROOFS  # noqa: E402

register(PROOFS)
