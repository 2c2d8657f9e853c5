"""Exercises defined for the grader's own tests (independent of the lessons' specs).

A small lesson-like set, written from the maths (not from the grader's code):

* ``attn_scores(q, k)``     causal, scaled pre-softmax scores [.., n, n], -inf above the diagonal
* ``embed_logits(X, W_E, W_pos, W_U)``  (X W_E + W_pos[:n]) W_U, with named terms
* ``double(x)``             2x, with a short timeout (for sleeping / looping submissions)
* ``count_pairs(tokens)``   set of (i, j) with i < j and tokens[i] == tokens[j]
* ``ranking(scores)``       list of (index,) sorted by decreasing score
* ``mean_norm(x)``          a float: mean Euclidean norm of the rows
* ``qk_pair(x, W_Q, W_K)``  a tuple (x W_Q, x W_K)
* ``ov_circuit(W_E, W_V, W_O, W_U)``  per-head full OV circuit W_E W_V^h W_O^h W_U [h, v, v]
* ``top_direction(M)``      the top right-singular vector (sign-free: a custom ``compare``)

The module is importable by worker processes (tests put its folder on ``sys.path``).
"""
from __future__ import annotations

import math

import torch

from mechinterp_edu.grader.spec import Case, Exercise, Mistake

LESSON = 1


def attn_scores_ref(q, k):
    d_head = q.shape[-1]
    n = q.shape[-2]
    scores = torch.matmul(q, k.transpose(-1, -2)) / math.sqrt(d_head)
    future = torch.ones(n, n, dtype=torch.bool, device=q.device).triu(diagonal=1)
    return scores.masked_fill(future, float("-inf"))


def attn_scores_unmasked(q, k):
    return torch.matmul(q, k.transpose(-1, -2)) / math.sqrt(q.shape[-1])


def attn_scores_cases():
    cases = []
    shapes = [(5, 16, 2, torch.float64, "seed 0"), (7, 32, 3, torch.float32, "seed 1"),
              (1, 8, 1, torch.float64, "length-1 sequence"), (4, 4, 1, torch.float32, "one head")]
    for seed, (n, d_head, heads, dtype, label) in enumerate(shapes):
        g = torch.Generator().manual_seed(100 + seed)
        q = torch.randn(heads, n, d_head, generator=g, dtype=dtype)
        k = torch.randn(heads, n, d_head, generator=g, dtype=dtype)
        cases.append(Case(f"{label}: {heads} heads, n_ctx {n}, d_head {d_head}, {str(dtype)[6:]}",
                          (q, k), {"d_head": d_head, "n_ctx": n, "n_heads": heads,
                                   "axes": ["head", "query position", "key position"]}))
    return cases


def embed_logits_ref(X, W_E, W_pos, W_U):
    n = X.shape[-2]
    return (X @ W_E + W_pos[:n]) @ W_U


def embed_logits_terms(case):
    X, W_E, W_pos, W_U = case.args
    n = X.shape[-2]
    return {"token path": X @ W_E @ W_U, "positional term": W_pos[:n] @ W_U}


def embed_logits_cases():
    cases = []
    for seed, (n, d_vocab, d_model, dtype) in enumerate([(6, 11, 16, torch.float64),
                                                         (3, 7, 8, torch.float32),
                                                         (1, 5, 4, torch.float64)]):
        g = torch.Generator().manual_seed(200 + seed)
        tokens = torch.randint(0, d_vocab, (n,), generator=g)
        X = torch.nn.functional.one_hot(tokens, d_vocab).to(dtype)
        W_E = torch.randn(d_vocab, d_model, generator=g, dtype=dtype)
        W_pos = torch.randn(n + 2, d_model, generator=g, dtype=dtype)
        W_U = torch.randn(d_model, d_vocab, generator=g, dtype=dtype)
        cases.append(Case(f"seed {seed}, n_ctx {n}, d_vocab {d_vocab}", (X, W_E, W_pos, W_U),
                          {"n_ctx": n, "d_vocab": d_vocab, "d_model": d_model}))
    return cases


def double_ref(x):
    return 2 * x


def double_cases():
    return [Case("a 2x3 matrix", (torch.arange(6, dtype=torch.float64).reshape(2, 3),)),
            Case("a float32 vector", (torch.linspace(-1, 1, 5),))]


def count_pairs_ref(tokens):
    t = tokens.tolist()
    return {(i, j) for i in range(len(t)) for j in range(i + 1, len(t)) if t[i] == t[j]}


def count_pairs_cases():
    return [Case("repeats", (torch.tensor([1, 2, 1, 3, 2, 1]),)),
            Case("length 1", (torch.tensor([4]),)),
            Case("no repeats", (torch.tensor([0, 1, 2]),))]


def ranking_ref(scores):
    order = sorted(range(scores.shape[0]), key=lambda i: (-float(scores[i]), i))
    return [(i,) for i in order]


def ranking_cases():
    return [Case("five scores", (torch.tensor([0.3, 2.0, -1.0, 0.7, 1.5], dtype=torch.float64),)),
            Case("one score", (torch.tensor([1.0]),))]


def mean_norm_ref(x):
    return float(x.norm(dim=-1).mean())


def mean_norm_cases():
    g = torch.Generator().manual_seed(7)
    return [Case("4 rows of 9", (torch.randn(4, 9, generator=g, dtype=torch.float64),), {"d": 9}),
            Case("1 row of 3", (torch.tensor([[3.0, 4.0, 0.0]]),), {"d": 3})]


def qk_pair_ref(x, W_Q, W_K):
    return (x @ W_Q, x @ W_K)


def qk_pair_cases():
    g = torch.Generator().manual_seed(11)
    x = torch.randn(3, 6, generator=g, dtype=torch.float64)
    return [Case("3 positions, d_model 6", (x, torch.randn(6, 4, generator=g, dtype=torch.float64),
                                            torch.randn(6, 4, generator=g, dtype=torch.float64)))]


def ov_circuit_ref(W_E, W_V, W_O, W_U):
    return W_E @ W_V @ W_O @ W_U


def ov_circuit_cases():
    cases = []
    for seed, (v, m, h, d, dtype) in enumerate([(7, 8, 2, 4, torch.float64), (5, 6, 1, 3, torch.float32)]):
        g = torch.Generator().manual_seed(300 + seed)
        args = (torch.randn(v, m, generator=g, dtype=dtype), torch.randn(h, m, d, generator=g, dtype=dtype),
                torch.randn(h, d, m, generator=g, dtype=dtype), torch.randn(m, v, generator=g, dtype=dtype))
        cases.append(Case(f"seed {seed}, {h} heads, d_vocab {v}", args,
                          {"d_vocab": v, "d_model": m, "n_heads": h, "d_head": d}))
    return cases


def top_direction_ref(M):
    return torch.linalg.svd(M).Vh[0]


def top_direction_compare(got, expected, case):
    cos = float((got @ expected).abs() / (got.norm() * expected.norm()))
    if abs(cos - 1) > 1e-6:
        return f"not the top right-singular direction (|cos| with it is {cos:.3f})"
    return None


def top_direction_cases():
    g = torch.Generator().manual_seed(400)
    return [Case("a 6x4 matrix", (torch.randn(6, 4, generator=g, dtype=torch.float64),))]


ATTN = Exercise(LESSON, "attn_scores", 3, attn_scores_ref, attn_scores_cases,
                summary="causal, scaled attention scores", timeout_s=20,
                mistakes=[Mistake("no causal mask",
                                  "CATALOGUE: you did not apply the causal mask; positions above the "
                                  "diagonal (the future) must be -inf.", attn_scores_unmasked)])
EMBED = Exercise(LESSON, "embed_logits", 2, embed_logits_ref, embed_logits_cases,
                 terms=embed_logits_terms, timeout_s=20)
DOUBLE = Exercise(LESSON, "double", 1, double_ref, double_cases, timeout_s=3)
PAIRS = Exercise(LESSON, "count_pairs", 1, count_pairs_ref, count_pairs_cases, output="set")
RANKING = Exercise(LESSON, "ranking", 1, ranking_ref, ranking_cases, output="list")
MEAN_NORM = Exercise(LESSON, "mean_norm", 1, mean_norm_ref, mean_norm_cases, output="float")
QK_PAIR = Exercise(LESSON, "qk_pair", 1, qk_pair_ref, qk_pair_cases, output="tuple")

OV = Exercise(LESSON, "ov_circuit", 2, ov_circuit_ref, ov_circuit_cases)
TOP = Exercise(LESSON, "top_direction", 1, top_direction_ref, top_direction_cases,
               compare=top_direction_compare)

ALL = [ATTN, EMBED, DOUBLE, PAIRS, RANKING, MEAN_NORM, QK_PAIR, OV, TOP]
CORE = [ATTN, EMBED, DOUBLE]
