"""Shared set-up of the live charts on one-layer attention-only toy models (lessons 1 and 2).

``setup(ctx)`` resolves the page controls ``model`` (the trained ``skip_trigrams`` model from the
zoo, or a random toy shape of :mod:`mechinterp_edu.models.toys`), ``head`` and ``prompt`` into a
:class:`Setup`; bad input becomes an :class:`InputProblem` (one sentence), never a traceback.
A trained model that cannot be loaded is replaced by a random one, with a note saying why.
Models are loaded once per (name, dtype) and cached.
"""
from __future__ import annotations

import functools
import math
from dataclasses import dataclass, field
from typing import Any, Optional

import torch

from mechinterp_edu.live.inputs import InputProblem, with_setup_from
from mechinterp_edu.models.toys import FALLBACK, TOY_SHAPES, fallback_note, load_toy
from mechinterp_edu.weights import layer_weights

TRAINED = "skip_trigrams"   # the trained toy model the set-up offers next to the random shapes

DEFAULT_PROMPT = "keep the in mind so take it to"
WEIGHT_KEYS = ("W_E", "W_pos", "W_Q", "W_K", "W_V", "W_O", "W_U")


# --------------------------------------------------------------------------- shared set-up
@functools.lru_cache(maxsize=8)
def _load(name: str, dtype_name: str):
    """:func:`~mechinterp_edu.models.toys.load_toy` on the CPU; lru_cache keeps successes only
    (exceptions are not cached), so a checkpoint written later is picked up."""
    return load_toy(name, dtype=getattr(torch, dtype_name), device="cpu")


def resolved_name(name: str, dtype_name: str = "float64") -> tuple[str, str]:
    """(name of the model actually used, note): the trained model, or the random fallback + why."""
    if name not in TOY_SHAPES and name != TRAINED:
        raise InputProblem(f"unknown model {name!r}; choose {TRAINED} or one of {sorted(TOY_SHAPES)}.")
    try:
        _load(name, dtype_name)
        return name, ""
    except Exception as exc:  # noqa: BLE001 - missing checkpoint: say so, show a random model
        return FALLBACK, fallback_note(name, exc)


def cached_model(name: str, dtype_name: str = "float64"):
    """(model, note) for a model name; float64 by default so comparisons show rounding only."""
    actual, note = resolved_name(name, dtype_name)
    return _load(actual, dtype_name), note


@functools.lru_cache(maxsize=8)
def _weights(actual: str) -> dict[str, torch.Tensor]:
    return layer_weights(_load(actual, "float64"), 0, dtype=torch.float64, device="cpu")


def cached_weights(name: str) -> tuple[dict[str, torch.Tensor], str]:
    """(layer-0 weights in float64, note), cached per model actually used."""
    actual, note = resolved_name(name)
    return _weights(actual), note


def vocabulary(name: str) -> Optional[tuple[str, ...]]:
    """Token names of the trained model (None for random models or when it is unavailable)."""
    if name != TRAINED or resolved_name(name)[0] != name:
        return None
    return tuple(_trained_extra()["vocab"])


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
        try:
            ids = _trained_extra()["encode"](" ".join(words))
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
        return tuple(_trained_extra()["vocab"])
    except Exception:  # noqa: BLE001 - names are a convenience for random models only
        return ()


def setup(ctx: dict[str, Any]) -> Setup:
    """Resolve the controls: model, weights (float64), prompt tokens, head. Raises InputProblem."""
    name, note = resolved_name(str(ctx.get("model") or TRAINED))   # one load attempt, not three
    model, weights = _load(name, "float64"), _weights(name)
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
    logits, cache = s.model.run_with_cache(s.tokens[None].to(next(s.model.parameters()).device))
    q, k = cache["blocks.0.attn.hook_q"][0], cache["blocks.0.attn.hook_k"][0]   # [pos, head, d_head]
    scores = torch.einsum("qhd,khd->hqk", q, k) / math.sqrt(q.shape[-1])
    n = scores.shape[-1]
    scores = scores.masked_fill(torch.triu(torch.ones(n, n, dtype=torch.bool), 1), float("-inf"))
    return cache["blocks.0.attn.hook_pattern"][0].double(), scores.double(), logits[0].detach().double()



def _trained_extra() -> dict[str, Any]:
    """The trained model's vocabulary and encoder, reached through the model zoo by name."""
    from mechinterp_edu.models.zoo import get_spec
    return get_spec(TRAINED).extra

