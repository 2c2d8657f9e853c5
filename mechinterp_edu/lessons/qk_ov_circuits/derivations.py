"""Lesson 2 derivations: QK and OV circuits, their rank, and the eigenvalue copying score.

Each step of the lesson text is one :class:`Step`, proven with sympy over small explicit
symbolic matrices ("matrix") or by simplification ("simplify"). TransformerLens row-vector
convention throughout; "paper" matrices are the column-vector ones of Elhage et al. (2021).
"""
from __future__ import annotations

from itertools import combinations

import sympy as sp

from mechinterp_edu.course import collector
from mechinterp_edu.derivations.framework import Derivation, Step, one_hot_matrix, softmax, symbolic_matrix

DERIVATIONS: list[Derivation] = []
register = collector(DERIVATIONS)

LESSON = 2
V, M, D = 3, 3, 2   # vocabulary, model width, head width (D < M so the rank bound is visible)


def _one_hot_row(token: int, size: int) -> sp.Matrix:
    return one_hot_matrix([token], size)


# --------------------------------------------------------------------------- QK circuit
def _qk_token_pair(a: int = 2, b: int = 0):
    W_E = symbolic_matrix("E", V, M)
    W_Q, W_K = symbolic_matrix("Q", M, D), symbolic_matrix("K", M, D)
    full_qk = W_E * W_Q * (W_E * W_K).T
    e_a, e_b = _one_hot_row(a, V), _one_hot_row(b, V)
    return (e_a * W_E * W_Q) * (e_b * W_E * W_K).T, full_qk[a:a + 1, b:b + 1]


def _qk_prompt():
    tokens = [1, 2, 1]
    X, W_E = one_hot_matrix(tokens, V), symbolic_matrix("E", V, M)
    W_Q, W_K = symbolic_matrix("Q", M, D), symbolic_matrix("K", M, D)
    full_qk = W_E * W_Q * (W_E * W_K).T
    read = sp.Matrix(len(tokens), len(tokens), lambda i, j: full_qk[tokens[i], tokens[j]])
    return X * W_E * W_Q * (X * W_E * W_K).T, read


def _four_terms():
    x, y = symbolic_matrix("x", 1, M), symbolic_matrix("y", 1, M)   # token embeddings (query, key)
    p, r = symbolic_matrix("p", 1, M), symbolic_matrix("r", 1, M)   # positional embeddings
    W_QK = symbolic_matrix("Q", M, D) * symbolic_matrix("K", M, D).T
    return (x + p) * W_QK * (y + r).T, x * W_QK * y.T + x * W_QK * r.T + p * W_QK * y.T + p * W_QK * r.T


def _positional():
    W_pos = symbolic_matrix("P", 3, M)
    W_Q, W_K = symbolic_matrix("Q", M, D), symbolic_matrix("K", M, D)
    by_pair = sp.Matrix(3, 3, lambda i, j: (W_pos.row(i) * W_Q * (W_pos.row(j) * W_K).T)[0, 0])
    return by_pair, W_pos * W_Q * (W_pos * W_K).T


def _qk_paper():
    W_E = symbolic_matrix("E", V, M)
    W_Q, W_K = symbolic_matrix("Q", M, D), symbolic_matrix("K", M, D)
    E_p, Q_p, K_p = W_E.T, W_Q.T, W_K.T      # paper shapes: [d_model, d_vocab], [d_head, d_model]
    W_QK_paper = Q_p.T * K_p
    return E_p.T * W_QK_paper * E_p, W_E * W_Q * (W_E * W_K).T


def _query_only_shift():
    s = sp.symbols("s0:3", real=True)
    f = sp.Symbol("f", real=True)   # e.g. a term that depends on the query token only
    return softmax([x + f for x in s]), softmax(list(s))


def _bias_terms():
    q, k = symbolic_matrix("q", 1, D), symbolic_matrix("k", 1, D)       # bias-free query and key
    b_Q, b_K = symbolic_matrix("bQ", 1, D), symbolic_matrix("bK", 1, D)
    return (q + b_Q) * (k + b_K).T, q * k.T + q * b_K.T + b_Q * k.T + b_Q * b_K.T


def _key_bias_drops():
    q, b_K = symbolic_matrix("q", 1, D), symbolic_matrix("bK", 1, D)
    keys = symbolic_matrix("k", 3, D)                                   # three keys, one per row
    with_bias = [(q * (keys.row(j) + b_K).T)[0, 0] for j in range(3)]
    return softmax(with_bias), softmax([(q * keys.row(j).T)[0, 0] for j in range(3)])


register(Derivation(
    name="qk_ov_circuits.qk",
    title="The QK circuit: a bilinear form on tokens and positions",
    lesson=LESSON,
    steps=(
        Step("token_pair", r"(e_a W_E W_Q^h)(e_b W_E W_K^h)^\top = \big(W_E W_Q^h (W_E W_K^h)^\top\big)_{ab}",
             lambda: _qk_token_pair()[0], lambda: _qk_token_pair()[1], "matrix",
             "The score a query token a gives a key token b (ignoring positions) is one entry of the full "
             "QK circuit: rows are queries (destination), columns keys (source)."),
        Step("prompt", r"X W_E W_Q^h (X W_E W_K^h)^\top = \big[\mathrm{QK}^h_{t_i t_j}\big]_{ij}",
             lambda: _qk_prompt()[0], lambda: _qk_prompt()[1], "matrix",
             "For a prompt, the token-token scores are the full QK circuit read at the prompt's token "
             "pairs: the circuit is a lookup table for every prompt at once."),
        Step("four_terms", r"(x+p) W_{QK} (y+r)^\top = x W_{QK} y^\top + x W_{QK} r^\top + p W_{QK} y^\top + p W_{QK} r^\top",
             lambda: _four_terms()[0], lambda: _four_terms()[1], "matrix",
             "With positional embeddings the score splits into token-token, token-position, "
             "position-token and position-position terms."),
        Step("positional", r"(W_{pos} W_Q^h)_i \cdot (W_{pos} W_K^h)_j = \big(W_{pos} W_Q^h (W_{pos} W_K^h)^\top\big)_{ij}",
             lambda: _positional()[0], lambda: _positional()[1], "matrix",
             "The position-position term is the positional QK circuit, a table over (query position, "
             "key position)."),
        Step("paper_convention", r"W_E^{\text{paper}\top} W_{QK}^{h,\text{paper}} W_E^\text{paper} = W_E W_Q^h (W_E W_K^h)^\top",
             lambda: _qk_paper()[0], lambda: _qk_paper()[1], "matrix",
             "The paper's W_E^T W_QK W_E with column-vector weights is the same matrix, not its "
             "transpose: a bilinear form keeps queries on the rows in both conventions."),
        Step("query_only_terms", r"\operatorname{softmax}_j(s_j + f) = \operatorname{softmax}_j(s_j)",
             lambda: _query_only_shift()[0], lambda: _query_only_shift()[1], "simplify",
             "Shift invariance: any score term that depends only on the query (the same for every key) "
             "does not change the pattern."),
        Step("bias_terms", r"(q_i + b_Q)\cdot(k_j + b_K) = q_i\cdot k_j + q_i\cdot b_K + b_Q\cdot k_j + b_Q\cdot b_K",
             lambda: _bias_terms()[0], lambda: _bias_terms()[1], "matrix",
             "With query and key biases the score gains three terms. q_i . b_K and b_Q . b_K are the same "
             "for every key; b_Q . k_j varies with the key."),
        Step("key_bias_drops", r"\operatorname{softmax}_j\big(q\cdot(k_j + b_K)\big) = \operatorname{softmax}_j(q\cdot k_j)",
             lambda: _key_bias_drops()[0], lambda: _key_bias_drops()[1], "simplify",
             "The key-independent term q . b_K (the query against the key bias) drops out of the pattern. "
             "The query bias's term b_Q . k_j does not: it changes with the key, so it shifts the pattern."),
    ),
))


# --------------------------------------------------------------------------- rank
def _factored():
    W_E = symbolic_matrix("E", V, M)
    W_Q, W_K = symbolic_matrix("Q", M, D), symbolic_matrix("K", M, D)
    return (W_E * W_Q) * (W_E * W_K).T, W_E * (W_Q * W_K.T) * W_E.T


def _minors(n: int = 4, r: int = 2):
    U, W = symbolic_matrix("u", n, r), symbolic_matrix("w", n, r)
    product = U * W.T
    size = r + 1
    minors = [product.extract(list(rows), list(cols)).det(method="berkowitz")
              for rows in combinations(range(n), size) for cols in combinations(range(n), size)]
    return sp.Matrix(minors), sp.zeros(len(minors), 1)


def _ov_rank():
    W_E, W_U = symbolic_matrix("E", 3, 3), symbolic_matrix("U", 3, 3)
    W_V, W_O = symbolic_matrix("V", 3, 1), symbolic_matrix("O", 1, 3)
    ov = W_E * W_V * W_O * W_U
    minors = [ov.extract(list(rows), list(cols)).det(method="berkowitz")
              for rows in combinations(range(3), 2) for cols in combinations(range(3), 2)]
    return sp.Matrix(minors), sp.zeros(len(minors), 1)


register(Derivation(
    name="qk_ov_circuits.rank",
    title="Low rank: every circuit goes through a d_head-wide bottleneck",
    lesson=LESSON,
    steps=(
        Step("factored", r"(W_E W_Q^h)(W_E W_K^h)^\top = W_E\,(W_Q^h W_K^{h\top})\,W_E^\top",
             lambda: _factored()[0], lambda: _factored()[1], "matrix",
             "The full QK circuit is a product of a [d_vocab, d_head] and a [d_head, d_vocab] factor; "
             "FactoredMatrix keeps the two factors instead of the d_vocab x d_vocab product."),
        Step("rank_bound", r"\operatorname{rank}(U W^\top) \le 2 \;\Leftarrow\; \text{every } 3\times 3 \text{ minor of } "
             r"U W^\top \text{ is } 0 \quad (U, W \in \mathbb R^{4\times 2})",
             lambda: _minors()[0], lambda: _minors()[1], "matrix",
             "A matrix has rank at most r exactly when all its (r+1) x (r+1) minors vanish; for a "
             "product through a width-2 bottleneck they vanish identically. So rank(QK^h) <= d_head."),
        Step("ov_rank", r"\operatorname{rank}(W_E W_V^h W_O^h W_U) \le 1 \quad (d_\text{head} = 1)",
             lambda: _ov_rank()[0], lambda: _ov_rank()[1], "matrix",
             "The same bound for the OV circuit, shown with a one-dimensional head: every 2 x 2 minor "
             "of the 3 x 3 product is 0."),
    ),
))


# --------------------------------------------------------------------------- OV circuit
def _ov_source_row(b: int = 1):
    W_E, W_U = symbolic_matrix("E", V, M), symbolic_matrix("U", M, V)
    W_V, W_O = symbolic_matrix("V", M, D), symbolic_matrix("O", D, M)
    full_ov = W_E * W_V * W_O * W_U
    return _one_hot_row(b, V) * W_E * W_V * W_O * W_U, full_ov[b:b + 1, :]


def _ov_attended():
    tokens = [0, 2, 2]
    X = one_hot_matrix(tokens, V)
    A = symbolic_matrix("A", 3, 3)
    OV = symbolic_matrix("OV", V, V)
    by_position = sp.Matrix.vstack(*[
        sum((A[i, j] * OV.row(tokens[j]) for j in range(3)), sp.zeros(1, V)) for i in range(3)
    ])
    return by_position, A * X * OV


def _ov_paper():
    W_E, W_U = symbolic_matrix("E", V, M), symbolic_matrix("U", M, V)
    W_V, W_O = symbolic_matrix("V", M, D), symbolic_matrix("O", D, M)
    E_p, U_p, V_p, O_p = W_E.T, W_U.T, W_V.T, W_O.T
    return U_p * (O_p * V_p) * E_p, (W_E * W_V * W_O * W_U).T


register(Derivation(
    name="qk_ov_circuits.ov",
    title="The OV circuit: what attending to a token does to the logits",
    lesson=LESSON,
    steps=(
        Step("source_row", r"e_b W_E W_V^h W_O^h W_U = \big(W_E W_V^h W_O^h W_U\big)_{b,:}",
             lambda: _ov_source_row()[0], lambda: _ov_source_row()[1], "matrix",
             "Row b of the full OV circuit is what the head adds to the logits when it attends fully to "
             "a token b: rows are source tokens, columns output logits."),
        Step("attended", r"\sum_j A^h_{ij}\, \mathrm{OV}^h_{t_j,:} = (A^h X\, \mathrm{OV}^h)_{i,:}",
             lambda: _ov_attended()[0], lambda: _ov_attended()[1], "matrix",
             "With a real pattern, position i gets the attention-weighted mix of the OV rows of the "
             "tokens it attends to: the head's token term from lesson 1."),
        Step("paper_transpose", r"W_U^\text{paper} W_{OV}^{h,\text{paper}} W_E^\text{paper} = (W_E W_V^h W_O^h W_U)^\top",
             lambda: _ov_paper()[0], lambda: _ov_paper()[1], "matrix",
             "Unlike the QK circuit, the OV circuit is a map, not a bilinear form: the paper's version "
             "has outputs on the rows, so it is the transpose of the TransformerLens one."),
    ),
))


# --------------------------------------------------------------------------- eigenvalues
def _charpoly():
    lam = sp.Symbol("lambda")
    A, B = symbolic_matrix("a", 3, 2), symbolic_matrix("b", 2, 3)
    big = (lam * sp.eye(3) - A * B).det(method="berkowitz")
    small = (lam * sp.eye(2) - B * A).det(method="berkowitz")
    return sp.Matrix([[big]]), sp.Matrix([[lam * small]])


def _trace_cyclic():
    A, B = symbolic_matrix("a", 3, 2), symbolic_matrix("b", 2, 3)
    return (A * B).trace(), (B * A).trace()


def _trace_is_sum():
    a, b, c, d = sp.symbols("a b c d", real=True)
    eigen = sp.Matrix([[a, b], [c, d]]).eigenvals()
    return sum(lam * mult for lam, mult in eigen.items()), a + d


def _copying_identity():
    c = sp.Symbol("c", positive=True)
    eigen = [c, c, c]
    return sp.re(sum(eigen)) / sum(sp.Abs(x) for x in eigen), 1


def _complex_pair():
    x, y = sp.symbols("x y", real=True)
    pair = [x + sp.I * y, x - sp.I * y]
    return sp.im(sum(pair)), 0


register(Derivation(
    name="qk_ov_circuits.eigen",
    title="Eigenvalues and the copying score",
    lesson=LESSON,
    steps=(
        Step("ab_ba", r"\det(\lambda I_3 - AB) = \lambda\,\det(\lambda I_2 - BA)\quad(A \in \mathbb R^{3\times 2}, B \in \mathbb R^{2\times 3})",
             lambda: _charpoly()[0], lambda: _charpoly()[1], "matrix",
             "AB and BA have the same nonzero eigenvalues; AB has extra zeros. So the d_vocab x d_vocab "
             "OV circuit's spectrum comes from a d_head x d_head matrix: FactoredMatrix.eigenvalues uses BA."),
        Step("trace_cyclic", r"\operatorname{tr}(AB) = \operatorname{tr}(BA)",
             lambda: _trace_cyclic()[0], lambda: _trace_cyclic()[1], "simplify",
             "The trace, the sum of the eigenvalues, is the same for both orders of the factors."),
        Step("trace_is_sum", r"\lambda_1 + \lambda_2 = a + d \text{ for } \begin{pmatrix} a & b \\ c & d \end{pmatrix}",
             lambda: _trace_is_sum()[0], lambda: _trace_is_sum()[1], "simplify",
             "The sum of the eigenvalues is the trace, even when the eigenvalues themselves are complex."),
        Step("conjugate_pair", r"\operatorname{Im}\big((x+iy) + (x-iy)\big) = 0",
             lambda: _complex_pair()[0], lambda: _complex_pair()[1], "simplify",
             "Complex eigenvalues of a real matrix come in conjugate pairs, so their sum is real; the "
             "copying score takes the real part to drop rounding noise."),
        Step("copying_identity", r"\frac{\operatorname{Re}\sum_i \lambda_i}{\sum_i |\lambda_i|} = 1 \text{ when all } \lambda_i = c > 0",
             lambda: _copying_identity()[0], lambda: _copying_identity()[1], "simplify",
             "A head that maps every token to a positive multiple of itself has all eigenvalues equal "
             "and positive, and scores exactly 1."),
    ),
))
