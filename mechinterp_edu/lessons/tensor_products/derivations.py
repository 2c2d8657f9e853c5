"""Lesson 1 derivations: the one-layer attention-only transformer as tensor products.

Every step of the lesson text is one :class:`Step` here, proven with sympy over small
explicit symbolic matrices ("matrix") or by simplification ("simplify").

Conventions: TransformerLens row vectors (``x @ W``); ``vec`` flattens row-major
(``M.reshape(-1)``), for which ``vec(A X W^T) = (A (x) W) vec(X)``.
"""
from __future__ import annotations

import sympy as sp

from mechinterp_edu.course import collector
from mechinterp_edu.derivations.framework import Derivation, Step, one_hot_matrix, softmax, symbolic_matrix

DERIVATIONS: list[Derivation] = []
register = collector(DERIVATIONS)

LESSON = 1


# --------------------------------------------------------------------------- helpers
def kron(A: sp.Matrix, B: sp.Matrix) -> sp.Matrix:
    """Kronecker product from its definition: block (i, j) is A[i, j] * B."""
    return sp.Matrix(A.rows * B.rows, A.cols * B.cols,
                     lambda r, c: A[r // B.rows, c // B.cols] * B[r % B.rows, c % B.cols])


def vec_rows(M: sp.Matrix) -> sp.Matrix:
    """Row-major vec (like ``torch.reshape(-1)``) as a column."""
    return sp.Matrix([M[i, j] for i in range(M.rows) for j in range(M.cols)])


def vec_cols(M: sp.Matrix) -> sp.Matrix:
    """Column-major vec (the textbook / Fortran order) as a column."""
    return sp.Matrix([M[i, j] for j in range(M.cols) for i in range(M.rows)])


def stochastic_rows(name: str, rows: int, cols: int) -> sp.Matrix:
    """A symbolic matrix whose rows sum to 1 (the last column is 1 minus the others)."""
    free = symbolic_matrix(name, rows, cols - 1)
    return sp.Matrix(rows, cols, lambda i, j: free[i, j] if j < cols - 1 else 1 - sum(free.row(i)))


# Small sizes: positions n = 3, vocabulary v = 3, model width m = 2, head width d = 2.
N, V, M, D = 3, 3, 2, 2
TOKENS = [2, 0, 2]


def _X():
    return one_hot_matrix(TOKENS, V)


# --------------------------------------------------------------------------- residual stream
def _lookup():
    W_E = symbolic_matrix("E", V, M)
    return _X() * W_E, sp.Matrix.vstack(*[W_E.row(t) for t in TOKENS])


def _augmented():
    W_E, P = symbolic_matrix("E", V, M), symbolic_matrix("P", N, M)
    X_aug = sp.Matrix.hstack(_X(), sp.eye(N))
    return X_aug * sp.Matrix.vstack(W_E, P), _X() * W_E + P


def _head_output():
    A, R = symbolic_matrix("A", N, N), symbolic_matrix("R", N, M)
    W_V, W_O = symbolic_matrix("V", M, D), symbolic_matrix("O", D, M)
    # What position i reads: the attention-weighted sum of the value vectors, then W_O.
    by_position = sp.Matrix.vstack(*[
        sum((A[i, j] * (R.row(j) * W_V) for j in range(N)), sp.zeros(1, D)) * W_O for i in range(N)
    ])
    return by_position, A * R * W_V * W_O


register(Derivation(
    name="tensor_products.residual",
    title="The residual stream of a one-layer attention-only model",
    lesson=LESSON,
    steps=(
        Step("lookup", r"X W_E = \begin{pmatrix} W_E[t_0] \\ \vdots \\ W_E[t_{n-1}] \end{pmatrix}",
             lambda: _lookup()[0], lambda: _lookup()[1], "matrix",
             "Multiplying the one-hot token matrix X by W_E picks out one embedding row per position."),
        Step("augmented", r"\begin{pmatrix} X & I_n \end{pmatrix}\begin{pmatrix} W_E \\ P \end{pmatrix} = X W_E + P",
             lambda: _augmented()[0], lambda: _augmented()[1], "matrix",
             "Appending the identity to X and P = W_pos[:n] to W_E turns the positional embedding into "
             "one more one-hot lookup, so positions fit the tensor-product form."),
        Step("head_output", r"\Big(\sum_j A^h_{ij}\,(r_j W_V^h)\Big) W_O^h = (A^h R W_V^h W_O^h)_i",
             lambda: _head_output()[0], lambda: _head_output()[1], "matrix",
             "A head moves information: position i adds the attention-weighted average of the value "
             "vectors, mapped back to the residual stream by W_O. As matrices, that is A R W_V W_O."),
    ),
))


# --------------------------------------------------------------------------- attention
def _bilinear():
    R = symbolic_matrix("R", N, M)
    W_Q, W_K = symbolic_matrix("Q", M, D), symbolic_matrix("K", M, D)
    q, k = R * W_Q, R * W_K
    by_pair = sp.Matrix(N, N, lambda i, j: (q.row(i) * k.row(j).T)[0, 0])
    return by_pair, R * (W_Q * W_K.T) * R.T


def gaussian_expectation(expr, variables) -> sp.Expr:
    """E[expr] for independent standard normal ``variables``: expand into monomials and replace
    each power x^k by the normal moment E[x^k] = (k-1)!! for even k and 0 for odd k."""
    poly = sp.Poly(sp.expand(expr), *variables)
    total = sp.Integer(0)
    for powers, coeff in poly.terms():
        moment = sp.Integer(1)
        for k in powers:
            moment *= 0 if k % 2 else sp.factorial2(k - 1)
        total += coeff * moment
    return total


def _scale_variance(d: int = 4):
    q, k = sp.symbols(f"q0:{d}", real=True), sp.symbols(f"k0:{d}", real=True)
    dot = sum(qc * kc for qc, kc in zip(q, k))
    variables = (*q, *k)
    return gaussian_expectation(dot ** 2, variables) - gaussian_expectation(dot, variables) ** 2, d


def _scale_variance_stats():
    from sympy.stats import E, Normal
    q = [Normal(f"q{c}", 0, 1) for c in range(2)]
    k = [Normal(f"k{c}", 0, 1) for c in range(2)]
    dot = sum(qc * kc for qc, kc in zip(q, k))
    return E(dot ** 2) - E(dot) ** 2, 2


def _masked_softmax():
    s0, s1 = sp.symbols("s0 s1", real=True)
    got = softmax([s0, s1, -sp.oo])
    total = sp.exp(s0) + sp.exp(s1)
    return got, sp.Matrix([sp.exp(s0) / total, sp.exp(s1) / total, 0])


def _rows_sum():
    s = sp.symbols("s0:4", real=True)
    return sum(softmax(list(s))), 1


def _shift():
    s = sp.symbols("s0:3", real=True)
    c = sp.Symbol("c", real=True)
    return softmax([x + c for x in s]), softmax(list(s))


register(Derivation(
    name="tensor_products.attention",
    title="Attention patterns: bilinear scores, scale, causal mask, softmax",
    lesson=LESSON,
    steps=(
        Step("bilinear", r"(R W_Q^h)_i \cdot (R W_K^h)_j = \big(R\, W_Q^h W_K^{h\top} R^\top\big)_{ij}",
             lambda: _bilinear()[0], lambda: _bilinear()[1], "matrix",
             "The score of destination i for source j is the dot product of a query and a key; all "
             "scores together are the bilinear form R W_Q W_K^T R^T."),
        Step("scale", r"\operatorname{Var}\Big(\sum_{c=1}^{d_\text{head}} q_c k_c\Big) = d_\text{head}"
             r"\quad(d_\text{head} = 4)",
             lambda: _scale_variance()[0], lambda: _scale_variance()[1], "simplify",
             "With independent standard normal query and key entries the raw dot product has variance "
             "d_head (computed here from the normal moments for d_head = 4); dividing by sqrt(d_head) "
             "keeps scores of order one for any head width."),
        Step("scale_stats", r"\operatorname{Var}(q \cdot k) = 2 \text{ for } q, k \sim \mathcal N(0, I_2)",
             lambda: _scale_variance_stats()[0], lambda: _scale_variance_stats()[1], "simplify",
             "The same fact by a second route: sympy.stats integrates over two independent normal pairs."),
        Step("causal_mask", r"\operatorname{softmax}(s_0, s_1, -\infty) = \frac{(e^{s_0}, e^{s_1}, 0)}{e^{s_0}+e^{s_1}}",
             lambda: _masked_softmax()[0], lambda: _masked_softmax()[1], "simplify",
             "Setting a future position's score to minus infinity before the softmax gives it weight "
             "exactly 0 and renormalises over the allowed positions."),
        Step("rows_sum_to_one", r"\sum_j \operatorname{softmax}(s)_j = 1",
             lambda: _rows_sum()[0], lambda: _rows_sum()[1], "simplify",
             "The softmax runs over sources (keys) for a fixed destination, so each row of A sums to 1."),
        Step("shift_invariance", r"\operatorname{softmax}(s + c\,\mathbf 1) = \operatorname{softmax}(s)",
             lambda: _shift()[0], lambda: _shift()[1], "simplify",
             "Adding the same number to every score in a row changes nothing; anything that depends "
             "only on the destination drops out of the pattern."),
    ),
))


# --------------------------------------------------------------------------- logits
H = 2  # heads in the symbolic logit decomposition


def _paths():
    R, W_U = symbolic_matrix("R", N, M), symbolic_matrix("U", M, V)
    A = [symbolic_matrix(f"A{h}", N, N) for h in range(H)]
    OV = [symbolic_matrix(f"OV{h}", M, M) for h in range(H)]
    final = R + sum((A[h] * R * OV[h] for h in range(H)), sp.zeros(N, M))
    return final * W_U, R * W_U + sum((A[h] * R * OV[h] * W_U for h in range(H)), sp.zeros(N, V))


def _positions():
    X, W_E, P = _X(), symbolic_matrix("E", V, M), symbolic_matrix("P", N, M)
    W_U = symbolic_matrix("U", M, V)
    A = [symbolic_matrix(f"A{h}", N, N) for h in range(H)]
    OV = [symbolic_matrix(f"OV{h}", M, M) for h in range(H)]
    R = X * W_E + P
    lhs = R * W_U + sum((A[h] * R * OV[h] * W_U for h in range(H)), sp.zeros(N, V))
    rhs = (X * W_E * W_U + P * W_U
           + sum((A[h] * X * W_E * OV[h] * W_U + A[h] * P * OV[h] * W_U for h in range(H)), sp.zeros(N, V)))
    return lhs, rhs


def _bias_constant():
    A = stochastic_rows("A", N, N)
    b = symbolic_matrix("b", 1, D)
    ones = sp.ones(N, 1)
    return A * (ones * b), ones * b


register(Derivation(
    name="tensor_products.logits",
    title="Logits = direct path + one term per head",
    lesson=LESSON,
    steps=(
        Step("paths", r"\Big(R + \sum_h A^h R W_{OV}^h\Big) W_U = R W_U + \sum_h A^h R W_{OV}^h W_U",
             lambda: _paths()[0], lambda: _paths()[1], "matrix",
             "The final residual stream is the embedding plus every head's output; the unembedding is "
             "linear, so the logits split into a direct path and one term per head (two heads here)."),
        Step("positions", r"R = X W_E + P \;\Rightarrow\; \text{logits} = X W_E W_U + P W_U + "
             r"\sum_h \big(A^h X W_E W_{OV}^h W_U + A^h P W_{OV}^h W_U\big)",
             lambda: _positions()[0], lambda: _positions()[1], "matrix",
             "Splitting the residual stream into token and position parts gives each path a token "
             "term (the paper's T) and a positional term (which the paper's formula leaves out)."),
        Step("bias_constant", r"A\,(\mathbf 1\, b^\top) = \mathbf 1\, b^\top \quad\text{when } A\mathbf 1 = \mathbf 1",
             lambda: _bias_constant()[0], lambda: _bias_constant()[1], "matrix",
             "Aside for models with biases: rows of A sum to 1, so a value bias passes through attention "
             "unchanged and adds the same vector at every position."),
    ),
))


# --------------------------------------------------------------------------- Kronecker form
def _vec_identity():
    A, X, W = symbolic_matrix("A", 2, 3), symbolic_matrix("x", 3, 2), symbolic_matrix("W", 2, 2)
    return vec_rows(A * X * W.T), kron(A, W) * vec_rows(X)


def _kron_is_interleaved_outer():
    A, W = symbolic_matrix("A", 2, 2), symbolic_matrix("W", 2, 3)
    flat_a, flat_w = vec_rows(A), vec_rows(W)
    outer = flat_a * flat_w.T  # what np.outer(A, W) returns: [4, 6], rows (i, j) of A, columns (a, b) of W
    p, q = W.shape
    m = A.cols
    # Entry ((i, a), (j, b)) of A (x) W is entry ((i, j), (a, b)) of the outer product.
    interleaved = sp.Matrix(A.rows * p, m * q,
                            lambda r, c: outer[(r // p) * m + (c // q), (r % p) * q + (c % q)])
    return kron(A, W), interleaved


def _vec_columns():
    A, X, W = symbolic_matrix("A", 2, 3), symbolic_matrix("x", 3, 2), symbolic_matrix("W", 2, 2)
    return vec_cols(A * X * W.T), kron(W, A) * vec_cols(X)


def _paper_direct():
    W_E, W_U = symbolic_matrix("E", V, M), symbolic_matrix("U", M, V)
    paper_E, paper_U = W_E.T, W_U.T          # paper: W_E is [d_model, d_vocab], W_U is [d_vocab, d_model]
    return paper_U * paper_E, (W_E * W_U).T


def _paper_ov():
    W_E, W_U = symbolic_matrix("E", V, M), symbolic_matrix("U", M, V)
    W_V, W_O = symbolic_matrix("V", M, D), symbolic_matrix("O", D, M)
    paper_OV = W_O.T * W_V.T                 # paper: W_OV = W_O W_V acting on columns
    return W_U.T * paper_OV * W_E.T, (W_E * W_V * W_O * W_U).T


def _tensor_form():
    n, v, m = 2, 2, 2
    X = one_hot_matrix([1, 0], v)
    W_E, W_U = symbolic_matrix("E", v, m), symbolic_matrix("U", m, v)
    A = [symbolic_matrix(f"A{h}", n, n) for h in range(H)]
    OV = [symbolic_matrix(f"OV{h}", m, m) for h in range(H)]
    token_logits = X * W_E * W_U + sum((A[h] * X * W_E * OV[h] * W_U for h in range(H)), sp.zeros(n, v))
    T = kron(sp.eye(n), (W_E * W_U).T) + sum((kron(A[h], (W_E * OV[h] * W_U).T) for h in range(H)),
                                             sp.zeros(n * v, n * v))
    return vec_rows(token_logits), T * vec_rows(X)


register(Derivation(
    name="tensor_products.kron",
    title="The tensor-product form T = Id (x) W_U W_E + sum_h A^h (x) W_U W_OV^h W_E",
    lesson=LESSON,
    steps=(
        Step("vec_identity", r"\mathrm{vec}(A X W^\top) = (A \otimes W)\,\mathrm{vec}(X)\quad(\text{row-major vec})",
             lambda: _vec_identity()[0], lambda: _vec_identity()[1], "matrix",
             "A (x) W acting on the token matrix means: A mixes positions (rows of X) while W acts on "
             "each row. With row-major flattening, as torch.reshape(-1) does, the Kronecker product "
             "keeps A on the left."),
        Step("kron_vs_outer", r"(A \otimes W)_{(i,a),(j,b)} = \mathrm{outer}(A, W)_{(i,j),(a,b)}",
             lambda: _kron_is_interleaved_outer()[0], lambda: _kron_is_interleaved_outer()[1], "matrix",
             "np.outer flattens both factors and lists all products A_ij W_ab with rows (i, j) and "
             "columns (a, b). The Kronecker product has the same numbers but needs rows (i, a) and "
             "columns (j, b): the indices must be interleaved, so np.outer alone is not the tensor product."),
        Step("vec_columns", r"\mathrm{vec}_\text{col}(A X W^\top) = (W \otimes A)\,\mathrm{vec}_\text{col}(X)",
             lambda: _vec_columns()[0], lambda: _vec_columns()[1], "matrix",
             "With column-major flattening the factors swap places: the order inside the Kronecker "
             "product is a convention that must match how vec flattens."),
        Step("paper_direct", r"W_U^\text{paper} W_E^\text{paper} = (W_E W_U)^\top",
             lambda: _paper_direct()[0], lambda: _paper_direct()[1], "matrix",
             "The paper uses column vectors (W_E is [d_model, d_vocab]); TransformerLens uses row vectors. "
             "The paper's direct-path matrix is the transpose of the TransformerLens product."),
        Step("paper_ov", r"W_U^\text{paper} W_{OV}^{h,\text{paper}} W_E^\text{paper} = (W_E W_V^h W_O^h W_U)^\top",
             lambda: _paper_ov()[0], lambda: _paper_ov()[1], "matrix",
             "The same for each head: reversing the order and transposing every factor turns the "
             "paper's W_U W_O W_V W_E into the transpose of W_E W_V W_O W_U."),
        Step("tensor_form", r"\mathrm{vec}(\text{token logits}) = \Big(\mathrm{Id} \otimes (W_E W_U)^\top + "
             r"\sum_h A^h \otimes (W_E W_{OV}^h W_U)^\top\Big)\mathrm{vec}(X)",
             lambda: _tensor_form()[0], lambda: _tensor_form()[1], "matrix",
             "Putting it together: the token part of the logits is T acting on the flattened one-hot "
             "matrix, with the paper's matrices written in TransformerLens shapes."),
    ),
))
