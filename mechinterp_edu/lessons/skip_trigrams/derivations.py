"""Lesson 3 derivations: a head's effect factors into a QK term and an OV term, the
skip-trigram score that follows from it, and the skip-trigram bug.

Row-vector (TransformerLens) convention. Small explicit symbolic matrices: n = 3 positions,
V = 3 tokens, d_model = 2, d_head = 2; biases are zero (as in the toy model).

``skip_trigrams.factorisation``
    head_output, per_source, scores, mean_position, mean_key, attention_share, lift, centring
``skip_trigrams.bug``
    outer_product, minor, two_heads
"""
from __future__ import annotations

import sympy as sp

from mechinterp_edu.course import collector
from mechinterp_edu.derivations.framework import Derivation, Step, one_hot_matrix, softmax, symbolic_matrix

DERIVATIONS: list[Derivation] = []
register = collector(DERIVATIONS)

LESSON = 3
N, V, M, D = 3, 3, 2, 2          # positions, vocabulary, d_model, d_head
TOKENS = [2, 0, 2]               # a sequence with a repeated token


def _weights():
    return (symbolic_matrix("E", V, M), symbolic_matrix("Q", M, D), symbolic_matrix("K", M, D),
            symbolic_matrix("V", M, D), symbolic_matrix("O", D, M), symbolic_matrix("U", M, V))


def _attention() -> sp.Matrix:
    """Any causal attention pattern: free symbols on and below the diagonal."""
    return sp.Matrix(N, N, lambda i, j: sp.Symbol(f"a_{i}_{j}", real=True) if j <= i else 0)


# --------------------------------------------------------------------------- factorisation
def _head_output():
    W_E, _, _, W_V, W_O, W_U = _weights()
    T = one_hot_matrix(TOKENS, V)
    P = symbolic_matrix("P", N, M)           # positional rows W_pos[:n]
    A = _attention()
    OV = W_E * W_V * W_O * W_U
    return A * (T * W_E + P) * W_V * W_O * W_U, A * T * OV + A * P * W_V * W_O * W_U


def _per_source():
    W_E, _, _, W_V, W_O, W_U = _weights()
    T = one_hot_matrix(TOKENS, V)
    P = symbolic_matrix("P", N, M)
    A = _attention()
    OV = W_E * W_V * W_O * W_U
    POS = P * W_V * W_O * W_U                # [position, C]: what each position writes
    by_source = sp.Matrix(N, V, lambda i, c: sum(A[i, j] * (OV[TOKENS[j], c] + POS[j, c]) for j in range(N)))
    return A * T * OV + A * P * W_V * W_O * W_U, by_source


def _scores():
    W_E, W_Q, W_K, _, _, _ = _weights()
    T = one_hot_matrix(TOKENS, V)
    QK = W_E * W_Q * (W_E * W_K).T
    read = sp.Matrix(N, N, lambda i, j: QK[TOKENS[i], TOKENS[j]])
    return (T * W_E * W_Q) * (T * W_E * W_K).T, read


def _mean_position():
    e_b, e_a = symbolic_matrix("b", 1, M), symbolic_matrix("a", 1, M)
    P = symbolic_matrix("P", N, M)
    W_QK = symbolic_matrix("Q", M, D) * symbolic_matrix("K", M, D).T
    p_bar = sp.ones(1, N) * P / N
    averaged = sum(((e_b + P.row(i)) * W_QK * (e_a + P.row(j)).T for i in range(N) for j in range(N)),
                   sp.zeros(1, 1)) / N ** 2
    return averaged, (e_b + p_bar) * W_QK * (e_a + p_bar).T


def _mean_key():
    X = symbolic_matrix("x", V, M)          # rows: every token at the mean position
    W_QK = symbolic_matrix("Q", M, D) * symbolic_matrix("K", M, D).T
    x_bar = sp.ones(1, V) * X / V
    b = 1
    row = X.row(b) * W_QK * X.T             # s[B, A] for every A
    return X.row(b) * W_QK * x_bar.T, sp.Matrix([[sum(row) / V]])


def _attention_share():
    s, s_bar = sp.symbols("s s_bar", real=True)
    n = sp.Symbol("n", positive=True)
    m = n + 1                               # context length > 1, so n = (length - 1) > 0
    lhs = sp.exp(s) / (sp.exp(s) + (m - 1) * sp.exp(s_bar))
    rhs = 1 / (1 + sp.exp(-(s - s_bar - sp.log(m - 1))))
    return lhs, rhs


def _lift():
    X = symbolic_matrix("x", V, M)
    W_V, W_O, W_U = symbolic_matrix("V", M, D), symbolic_matrix("O", D, M), symbolic_matrix("U", M, V)
    a = sp.Symbol("alpha", real=True)
    OV = X * W_V * W_O * W_U                # [A, C]
    x_bar = sp.ones(1, V) * X / V
    ov_bar = x_bar * W_V * W_O * W_U
    src = 2
    with_a = a * OV.row(src) + (1 - a) * ov_bar            # A gets alpha, the background the rest
    background = ov_bar                                     # every key is the mean token
    return with_a - background, a * (OV.row(src) - sp.ones(1, V) * OV / V)


def _centring():
    z = list(sp.symbols("z0:3", real=True))
    c = sp.Symbol("c", real=True)
    return softmax([v + c for v in z]), softmax(z)


register(Derivation(
    name="skip_trigrams.factorisation",
    title="A head's effect factors into a QK term and an OV term",
    lesson=LESSON,
    steps=(
        Step("head_output",
             r"A^h (T W_E + P) W_V^h W_O^h W_U = A^h\,T\,\mathrm{OV}^h + A^h P\, W_V^h W_O^h W_U,"
             r"\quad \mathrm{OV}^h = W_E W_V^h W_O^h W_U",
             lambda: _head_output()[0], lambda: _head_output()[1], "matrix",
             "With one-hot tokens T, positional rows P and no biases, a head's contribution to the logits "
             "is its attention pattern times the OV circuit read at the tokens of the sequence, plus its "
             "pattern times what each position writes (the positional value term)."),
        Step("per_source",
             r"\big(A^h T\,\mathrm{OV}^h + A^h P W_V^h W_O^h W_U\big)_{iC} = \sum_{j} A^h_{ij}\,"
             r"\big(\mathrm{OV}^h_{t_j C} + (P W_V^h W_O^h W_U)_{jC}\big)",
             lambda: _per_source()[0], lambda: _per_source()[1], "matrix",
             "At destination i the head adds, for every source j, (how much i attends to j) times (how "
             "much token t_j raises C, plus what position j writes). The token part is a sum of "
             "skip-trigram terms [t_j] ... [t_i] -> [C]: attention is the QK factor, OV the second."),
        Step("scores",
             r"(T W_E W_Q^h)(T W_E W_K^h)^\top = \big[\mathrm{QK}^h_{t_i t_j}\big]_{ij}",
             lambda: _scores()[0], lambda: _scores()[1], "matrix",
             "The pre-softmax score of destination i for source j (token part) depends only on the pair of "
             "tokens (B, A) = (t_i, t_j): the QK circuit decides how much B attends to A."),
        Step("mean_position",
             r"\frac{1}{n^2}\sum_{i,j}(e_B+p_i)\,W_{QK}\,(e_A+p_j)^\top = (e_B+\bar p)\,W_{QK}\,(e_A+\bar p)^\top",
             lambda: _mean_position()[0], lambda: _mean_position()[1], "matrix",
             "Averaging the bilinear score over query and key positions, each independently, is the same "
             "as putting both tokens at the mean position p_bar. That is how the score handles W_pos: "
             "positions are averaged out (the causal constraint j < i is ignored)."),
        Step("mean_key",
             r"x_B W_{QK}\,\bar x^\top = \frac{1}{V}\sum_{A} x_B W_{QK}\,x_A^\top,\quad \bar x = \frac{1}{V}\sum_A x_A",
             lambda: _mean_key()[0], lambda: _mean_key()[1], "matrix",
             "The score of the average token is the average score: the background key is the row mean "
             "s_bar[B] of the QK table."),
        Step("attention_share",
             r"\frac{e^{s}}{e^{s} + (n-1)\,e^{\bar s}} = \sigma\big(s - \bar s - \log(n-1)\big)",
             lambda: _attention_share()[0], lambda: _attention_share()[1], "simplify",
             "In a context of n keys where A is one and the other n-1 are the average token, A gets a "
             "logistic share of the attention."),
        Step("lift",
             r"\big[\alpha\,\mathrm{OV}_A + (1-\alpha)\,\mathrm{OV}_{\bar x}\big] - \mathrm{OV}_{\bar x} "
             r"= \alpha\,\big(\mathrm{OV}_A - \tfrac{1}{V}\textstyle\sum_{A'}\mathrm{OV}_{A'}\big)",
             lambda: _lift()[0], lambda: _lift()[1], "matrix",
             "Replacing one background key by A changes the head's logits by (A's attention share) times "
             "(A's OV row minus the mean OV row): the product of a QK term and a centred OV term."),
        Step("centring",
             r"\mathrm{softmax}(z + c\,\mathbf 1) = \mathrm{softmax}(z)",
             lambda: _centring()[0], lambda: _centring()[1], "simplify",
             "Adding the same amount to every logit changes no probability, so the OV term is also "
             "centred over the output token C."),
    ),
))


# --------------------------------------------------------------------------- the bug
def _outer_product():
    a = sp.Matrix(2, 1, sp.symbols("alpha_in alpha_at", real=True))    # attn[B, keep] for B = in, at
    o = sp.Matrix(1, 2, sp.symbols("o_mind o_bay", real=True))         # ov[keep, C] for C = mind, bay
    S = sp.Matrix(2, 2, lambda b, c: a[b] * o[c])                      # S[keep, B, C] entry by entry
    return S, a * o


def _minor():
    a_in, a_at, o_mind, o_bay = sp.symbols("alpha_in alpha_at o_mind o_bay", real=True)

    def S(a, o):
        return a * o

    return S(a_in, o_bay) * S(a_at, o_mind), S(a_in, o_mind) * S(a_at, o_bay)


def _two_heads():
    u1 = sp.Matrix(2, 1, sp.symbols("alpha1_in alpha1_at", real=True))
    u2 = sp.Matrix(2, 1, sp.symbols("alpha2_in alpha2_at", real=True))
    v1 = sp.Matrix(1, 2, sp.symbols("o1_mind o1_bay", real=True))
    v2 = sp.Matrix(1, 2, sp.symbols("o2_mind o2_bay", real=True))
    total = u1 * v1 + u2 * v2
    return total.det(), sp.Matrix.hstack(u1, u2).det() * sp.Matrix.vstack(v1, v2).det()


register(Derivation(
    name="skip_trigrams.bug",
    title="Skip-trigram bugs: one head cannot keep ... in mind and keep ... at bay",
    lesson=LESSON,
    steps=(
        Step("outer_product",
             r"\big[S^h(\mathrm{keep}, B, C)\big]_{B \in \{in, at\},\,C \in \{mind, bay\}} = \alpha\, o^\top",
             lambda: _outer_product()[0], lambda: _outer_product()[1], "matrix",
             "For a fixed A, one head's scores over (B, C) are an outer product: a column of attention "
             "(QK) times a row of logit effects (OV). A rank-one table."),
        Step("minor",
             r"S(\mathrm{keep},in,bay)\,S(\mathrm{keep},at,mind) = S(\mathrm{keep},in,mind)\,S(\mathrm{keep},at,bay)",
             lambda: _minor()[0], lambda: _minor()[1], "simplify",
             "So if keep ... in -> mind and keep ... at -> bay are both strong in a head, the product of "
             "the two unplanted ones is just as large: at least one of keep ... in -> bay and "
             "keep ... at -> mind is strong too. That is the bug."),
        Step("two_heads",
             r"\det\big(u_1 v_1^\top + u_2 v_2^\top\big) = \det[u_1\ u_2]\;\det\begin{bmatrix}v_1^\top\\ v_2^\top\end{bmatrix}",
             lambda: _two_heads()[0], lambda: _two_heads()[1], "simplify",
             "Summed over two heads the minor need not vanish, but only if the heads differ in both what "
             "they attend from (QK) and what they write (OV). Escaping the bug costs a second head."),
    ),
))
