"""Lesson 1 live charts: attention patterns, tensor-product terms, their sum against the model.

Every chart takes the page's ``ctx`` (``model``, ``head``, ``prompt``) and returns live
outputs (see :mod:`mechinterp_edu.live.registry`). Bad input (an unknown token, a head the
model does not have) becomes a one-line markdown message, never a traceback.
Models are loaded once per (name, dtype) and cached.
"""
from __future__ import annotations

import functools
from dataclasses import dataclass, field
from typing import Any, Optional

import pandas as pd
import torch

from mechinterp_edu.charts import heatmap
from mechinterp_edu.live.inputs import InputProblem, with_setup_from
from mechinterp_edu.live.registry import LiveChart, chart_decorator
from mechinterp_edu.lessons.tensor_products import reference as ref

CHARTS: list[LiveChart] = []
live_chart = chart_decorator(CHARTS)

DEFAULT_PROMPT = "keep the in mind so take it to"
WEIGHT_KEYS = ("W_E", "W_pos", "W_Q", "W_K", "W_V", "W_O", "W_U")


# --------------------------------------------------------------------------- shared set-up
FALLBACK = "random-4h"


@functools.lru_cache(maxsize=8)
def _load(name: str, dtype_name: str):
    """Load (trained) or build (random) a model; raises if it cannot. lru_cache keeps successes
    only (exceptions are not cached), so a checkpoint written later is picked up."""
    dtype = getattr(torch, dtype_name)
    if name in ref.TOY_SHAPES:
        return ref.random_toy_model(name, dtype=dtype, device="cpu")
    from mechinterp_edu.models.zoo import load_model
    return load_model(name, device="cpu", dtype=dtype)


def resolved_name(name: str, dtype_name: str = "float64") -> tuple[str, str]:
    """(name of the model actually used, note): the trained model, or the random fallback + why."""
    if name not in ref.TOY_SHAPES and name != "skip_trigrams":
        raise InputProblem(f"unknown model {name!r}; choose skip_trigrams or one of {sorted(ref.TOY_SHAPES)}.")
    try:
        _load(name, dtype_name)
        return name, ""
    except Exception as exc:  # noqa: BLE001 - missing checkpoint: say so, show a random model
        first = str(exc).splitlines()[0] if str(exc) else "no detail"
        return FALLBACK, (f"The trained {name} model could not be loaded ({type(exc).__name__}: {first}); "
                          f"showing {FALLBACK} instead.")


def cached_model(name: str, dtype_name: str = "float64"):
    """(model, note) for a model name; float64 by default so comparisons show rounding only."""
    actual, note = resolved_name(name, dtype_name)
    return _load(actual, dtype_name), note


@functools.lru_cache(maxsize=8)
def _weights(actual: str) -> dict[str, torch.Tensor]:
    return ref.model_weights(_load(actual, "float64"), dtype=torch.float64, device="cpu")


def cached_weights(name: str) -> tuple[dict[str, torch.Tensor], str]:
    """(layer-0 weights in float64, note), cached per model actually used."""
    actual, note = resolved_name(name)
    return _weights(actual), note


def vocabulary(name: str) -> Optional[tuple[str, ...]]:
    """Token names of the trained model (None for random models or when it is unavailable)."""
    if name != "skip_trigrams" or resolved_name(name)[0] != name:
        return None
    from mechinterp_edu.lessons.skip_trigrams.model import VOCAB
    return tuple(VOCAB)


def token_labels(name: str, d_vocab: int) -> list[str]:
    vocab = vocabulary(name)
    return list(vocab) if vocab is not None and len(vocab) == d_vocab else [str(i) for i in range(d_vocab)]


@dataclass
class Setup:
    name: str
    model: Any
    weights: dict[str, torch.Tensor]
    tokens: torch.Tensor
    labels: list[str]          # one label per prompt position ("keep@0")
    vocab_labels: list[str]    # one label per vocabulary token
    head: int
    notes: list[str] = field(default_factory=list)

    @property
    def n_heads(self) -> int:
        return self.weights["W_Q"].shape[0]

    def args(self) -> list[torch.Tensor]:
        return [self.weights[k] for k in WEIGHT_KEYS]


def _prompt_ids(text: str, name: str, d_vocab: int, n_ctx: int, notes: list[str]) -> list[int]:
    words = str(text or "").replace(",", " ").split()
    if not words:
        raise InputProblem("The prompt is empty: type tokens separated by spaces, e.g. "
                           f"'{DEFAULT_PROMPT}' (names for skip_trigrams) or '1 2 3' (ids).")
    vocab = vocabulary(name)
    ids: list[int] = []
    if vocab is not None:
        from mechinterp_edu.lessons.skip_trigrams.model import encode
        try:
            ids = encode(" ".join(words))
        except ValueError as exc:
            raise InputProblem(f"Prompt: {exc}") from None
    else:
        named = {w: i for i, w in enumerate(_skip_trigram_names())}
        for w in words:
            if w.lstrip("-").isdigit():
                ids.append(int(w))
            elif w.lower() in named:
                ids.append(named[w.lower()])
            else:
                raise InputProblem(f"Prompt: {w!r} is not a token id; this random model's tokens are the ids "
                                   f"0 to {d_vocab - 1}.")
        if any(not 0 <= i < d_vocab for i in ids):
            notes.append(f"This random model has only {d_vocab} tokens, so the prompt's ids were taken "
                         f"modulo {d_vocab}.")
            ids = [i % d_vocab for i in ids]
    if len(ids) > n_ctx:
        notes.append(f"The model reads at most {n_ctx} tokens; using the last {n_ctx} of the prompt.")
        ids = ids[-n_ctx:]
    return ids


@functools.lru_cache(maxsize=1)
def _skip_trigram_names() -> tuple[str, ...]:
    try:
        from mechinterp_edu.lessons.skip_trigrams.model import VOCAB
        return tuple(VOCAB)
    except Exception:  # noqa: BLE001 - names are a convenience for random models only
        return ()


def setup(ctx: dict[str, Any]) -> Setup:
    """Resolve the controls: model, weights (float64), prompt tokens, head. Raises InputProblem."""
    name = str(ctx.get("model") or "skip_trigrams")
    model, note = cached_model(name)
    weights, _ = cached_weights(name)
    name = resolved_name(name)[0]
    notes = [note] if note else []
    d_vocab, n_ctx = weights["W_E"].shape[0], weights["W_pos"].shape[0]
    ids = _prompt_ids(ctx.get("prompt", DEFAULT_PROMPT), name, d_vocab, n_ctx, notes)
    n_heads = weights["W_Q"].shape[0]
    try:
        head = int(ctx.get("head", 0) or 0)
    except (TypeError, ValueError):
        raise InputProblem(f"Head must be a whole number from 0 to {n_heads - 1}.") from None
    if not 0 <= head < n_heads:
        notes.append(f"This model has {n_heads} head(s) (0 to {n_heads - 1}); showing head {head % n_heads} "
                     f"instead of {head}.")
        head = head % n_heads
    vocab_labels = token_labels(name, d_vocab)
    labels = [f"{vocab_labels[t]}@{i}" for i, t in enumerate(ids)]
    return Setup(name, model, weights, torch.tensor(ids, dtype=torch.long), labels, vocab_labels, head, notes)


with_setup = with_setup_from(setup)


def model_scores_and_logits(s: Setup) -> tuple[torch.Tensor, torch.Tensor, torch.Tensor]:
    """(pattern, pre-softmax scores from hook_q/hook_k, logits) from the model's own forward pass."""
    import math
    logits, cache = s.model.run_with_cache(s.tokens[None].to(next(s.model.parameters()).device))
    q, k = cache["blocks.0.attn.hook_q"][0], cache["blocks.0.attn.hook_k"][0]   # [pos, head, d_head]
    scores = torch.einsum("qhd,khd->hqk", q, k) / math.sqrt(q.shape[-1])
    n = scores.shape[-1]
    scores = scores.masked_fill(torch.triu(torch.ones(n, n, dtype=torch.bool), 1), float("-inf"))
    return cache["blocks.0.attn.hook_pattern"][0].double(), scores.double(), logits[0].detach().double()


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
    import mechinterp_edu.lessons.tensor_products.derivations  # noqa: F401  (registers the derivations)
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
