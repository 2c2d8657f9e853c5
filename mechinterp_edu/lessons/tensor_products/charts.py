"""Lesson 1 live charts: attention patterns, tensor-product terms, their sum against the model.

Every chart takes the page's ``ctx`` (``model``, ``head``, ``prompt``) and returns live
outputs (see :mod:`mechinterp_edu.live.registry`); the controls are resolved by the shared
set-up in :mod:`mechinterp_edu.live.toy_setup` (also used by lesson 2).
"""
from __future__ import annotations

import functools
from typing import Any

import pandas as pd
import torch

from mechinterp_edu.charts import heatmap
from mechinterp_edu.live.registry import LiveChart, chart_decorator
from mechinterp_edu.live.toy_setup import Setup, cached_model, cached_weights, model_scores_and_logits, setup, with_setup
from mechinterp_edu.lessons.tensor_products import reference as ref

CHARTS: list[LiveChart] = []
live_chart = chart_decorator(CHARTS)

# --------------------------------------------------------------------------- charts
@live_chart("tensor_products.attention_pattern", "Attention pattern A^h of one head",
            "Rows: destination (query) positions; columns: source (key) positions. Causal: nothing "
            "above the diagonal.")
@with_setup
def attention_pattern(s: Setup):
    A = ref.attention_patterns(s.tokens, s.weights["W_E"], s.weights["W_pos"], s.weights["W_Q"], s.weights["W_K"])
    return [heatmap(A[s.head], title=f"A^{s.head} on the prompt ({s.name})", x_labels=s.labels,
                    y_labels=s.labels, x_title="source (key) position", y_title="destination (query) position",
                    kind="prob")]


@live_chart("tensor_products.scores", "Scores before the softmax: scale and causal mask",
            "The scaled scores q.k/sqrt(d_head) of one head; masked entries are shown as blank.")
@with_setup
def scores(s: Setup):
    w = s.weights
    S = ref.attention_scores(s.tokens, w["W_E"], w["W_pos"], w["W_Q"], w["W_K"])[s.head]
    shown = S.masked_fill(torch.isinf(S), float("nan"))
    _, model_scores, _ = model_scores_and_logits(s)
    finite = ~torch.isinf(S)
    diff = (S[finite] - model_scores[s.head][finite]).abs().max().item()
    return [heatmap(shown, title=f"scaled scores of head {s.head}", x_labels=s.labels, y_labels=s.labels,
                    x_title="source (key) position", y_title="destination (query) position"),
            {"d_head": int(w["W_Q"].shape[-1]), "scale 1/sqrt(d_head)": float(w["W_Q"].shape[-1]) ** -0.5,
             "max |ours - model (hook_q, hook_k)|": diff}]


@live_chart("tensor_products.terms", "Each tensor-product term",
            "The direct path and the selected head's token and positional terms, each [n_ctx, d_vocab], "
            "and the size of every term of every head.")
@with_setup
def terms(s: Setup):
    t = ref.tensor_product_terms(s.tokens, *s.args())
    h = s.head
    shown = {
        "Id ⊗ W_U W_E: direct path, tokens": t.direct_tokens,
        "direct path, positions (P W_U)": t.direct_positions,
        f"A^{h} ⊗ W_U W_OV^{h} W_E: head {h}, tokens": t.head_tokens[h],
        f"head {h}, positions (A^{h} P W_OV^{h} W_U)": t.head_positions[h],
    }
    m = max(float(v.abs().max()) for v in shown.values()) or 1.0
    charts = [heatmap(v, title=k, x_labels=s.vocab_labels, y_labels=s.labels, x_title="output token",
                      y_title="position", width=min(640, 14 * len(s.vocab_labels) + 40), height=20 * len(s.labels) + 40,
                      domain_max=m) for k, v in shown.items()]
    sizes = pd.DataFrame([{"term": k, "Frobenius norm": float(v.norm()), "max |entry|": float(v.abs().max())}
                          for k, v in t.named().items()])
    return charts + [sizes]


@live_chart("tensor_products.sum_vs_model", "Sum of the terms next to the model's logits",
            "The tensor-product sum and the model's own forward pass, with the max abs difference; "
            "also what leaving out the positional terms costs.")
@with_setup
def sum_vs_model(s: Setup):
    t = ref.tensor_product_terms(s.tokens, *s.args())
    total = t.total()
    _, _, logits = model_scores_and_logits(s)
    paper_only = t.direct_tokens + t.head_tokens.sum(0)     # the paper's T, positions only inside A
    m = float(logits.abs().max()) or 1.0
    kw = dict(x_labels=s.vocab_labels, y_labels=s.labels, x_title="output token", y_title="position",
              width=min(640, 14 * len(s.vocab_labels) + 40), height=20 * len(s.labels) + 40, domain_max=m)
    return [
        heatmap(total, title="sum of the tensor-product terms", **kw),
        heatmap(logits, title="the model's logits (forward pass)", **kw),
        {"max |sum - model|": float((total - logits).abs().max()),
         "relative error": ref.relative_error(total, logits),
         "relative error without the positional terms": ref.relative_error(paper_only, logits),
         "dtype": "float64"},
    ]


@live_chart("tensor_products.kron_demo", "A ⊗ W acting on the token matrix",
            "The explicit Kronecker product of a 3-position pattern block and a 4-token slice of the "
            "head's OV matrix, and how far the notes' np.outer is from it.")
@with_setup
def kron_demo(s: Setup):
    w = s.weights
    n = min(3, len(s.tokens))
    A = ref.attention_patterns(s.tokens[:n], w["W_E"], w["W_pos"], w["W_Q"], w["W_K"])[s.head]
    vocab = sorted(set(s.tokens[:n].tolist()))[:4]
    vocab = (vocab + [i for i in range(w["W_E"].shape[0]) if i not in vocab])[:4]
    ov_paper = (w["W_E"][vocab] @ w["W_V"][s.head] @ w["W_O"][s.head] @ w["W_U"][:, vocab]).T   # [4, 4]
    X = torch.zeros(n, len(vocab), dtype=torch.float64)
    for i, t in enumerate(s.tokens[:n].tolist()):
        if t in vocab:
            X[i, vocab.index(t)] = 1.0
    big = torch.kron(A.contiguous(), ov_paper.contiguous())
    labels = [f"{s.labels[i]}|{s.vocab_labels[v]}" for i in range(n) for v in vocab]
    via_kron = ref.kron_apply(A, ov_paper, X)
    two_sided = ref.two_sided_apply(A, ov_paper, X)
    outer = ref.notes_outer_apply(A, ov_paper, X)
    return [
        heatmap(big, title=f"A^{s.head} ⊗ W_U W_OV^{s.head} W_E (first {n} positions, 4 tokens)",
                x_labels=labels, y_labels=labels, x_title="input (position | token)",
                y_title="output (position | token)", width=420, height=420),
        {"max |kron(A, W) vec X - A X W^T|": float((via_kron - two_sided).abs().max()),
         "max |np.outer version - A X W^T|": float((outer - two_sided).abs().max()),
         "kron shape": f"{tuple(big.shape)}",
         "np.outer shape": f"({A.numel()}, {ov_paper.numel()})"},
    ]


DERIVATIONS = ("tensor_products.residual", "tensor_products.attention", "tensor_products.logits",
               "tensor_products.kron")


@functools.lru_cache(maxsize=1)
def _verdicts():
    from mechinterp_edu.derivations.framework import check, get_derivation
    return [r for name in DERIVATIONS for r in check(get_derivation(name))]


@live_chart("tensor_products.derivation", "The derivation, step by step, with sympy's verdict",
            "Every step of lesson 1's derivations, proven symbolically.")
def derivation(ctx: dict[str, Any]):
    return list(_verdicts())


def pattern_frame(A: torch.Tensor, labels: list[str]) -> pd.DataFrame:
    """A small table view of a pattern (used by notebooks)."""
    return pd.DataFrame(A.detach().cpu().double().numpy(), index=labels, columns=labels)


__all__ = ["attention_pattern", "cached_model", "cached_weights", "derivation", "kron_demo", "scores",
           "setup", "sum_vs_model", "terms", "with_setup"]
