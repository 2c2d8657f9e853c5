"""Lesson 4 bug lab: the circuit tables and the training loss with known bugs switched on.

Circuit bugs (:data:`CIRCUIT_BUGS`) change how the five tables are built; training bugs
(:data:`TRAINING_BUGS`) change the loss the model is trained on (the zoo recipe in
``model.py`` trains with them through :func:`score_scale` and the same names). The ``debug_*``
functions are the fixed versions the learner's exercise is compared with.
"""
from __future__ import annotations

import itertools
import math
from typing import Iterable

import torch
from torch import Tensor

from mechinterp_edu.grader.spec import Mistake
from mechinterp_edu.lessons.max_of_k.reference import Circuits, circuits, mean_diff_positions


CIRCUIT_BUGS = {
    "divide_by_d_head": "scores divided by d_head instead of sqrt(d_head)",
    "drop_query_pos": "query embedded as W_E, dropping its positional term W_pos[-1]",
    "raw_pos_in_eqkp": "EQKP built from raw W_pos instead of P_hat = W_pos - P_avg",
}
TRAINING_BUGS = {
    "last_token_target": "trained to predict the last token instead of the max",
    "sqrt_d_multiplier": "attention scores multiplied by sqrt(d_head) instead of divided",
}


def buggy_circuits(W_E, W_pos, W_Q, W_K, W_V, W_O, W_U,
                   bugs: Iterable[str] = tuple(CIRCUIT_BUGS)) -> Circuits:
    """The five tables with any of the circuit bugs switched on (all three by default)."""
    bugs = set(bugs)
    unknown = bugs - set(CIRCUIT_BUGS)
    if unknown:
        raise ValueError(f"Unknown circuit bug(s) {sorted(unknown)}; known: {sorted(CIRCUIT_BUGS)}.")
    d_head = W_Q.shape[-1]
    scale = d_head if "divide_by_d_head" in bugs else math.sqrt(d_head)
    P_avg, P_hat = mean_diff_positions(W_pos)
    E_q = W_E if "drop_query_pos" in bugs else W_E + W_pos[-1]
    E_bar = W_E + P_avg
    P_keys = W_pos if "raw_pos_in_eqkp" in bugs else P_hat
    QK = W_Q @ W_K.T
    OVU = W_V @ W_O @ W_U
    return Circuits(E_q @ QK @ E_bar.T / scale, E_q @ QK @ P_keys.T / scale,
                    E_q @ W_U, E_bar @ OVU, P_hat @ OVU)


def score_scale(d_head: int, bugs: Iterable[str] = ()) -> float:
    """The factor on q . k: 1/sqrt(d_head), or sqrt(d_head) with the ``sqrt_d_multiplier`` training bug."""
    return math.sqrt(d_head) if "sqrt_d_multiplier" in set(bugs) else 1.0 / math.sqrt(d_head)


def training_loss(tokens: Tensor, W_E, W_pos, W_Q, W_K, W_V, W_O, W_U,
                  bugs: Iterable[str] = ()) -> Tensor:
    """Mean cross-entropy of the last position's logits against the target (a scalar).

    The forward pass is the full model (causal attention, all positions), written from the
    weights; ``bugs`` switches on the training bugs of the bug lab.
    """
    bugs = set(bugs)
    unknown = bugs - set(TRAINING_BUGS)
    if unknown:
        raise ValueError(f"Unknown training bug(s) {sorted(unknown)}; known: {sorted(TRAINING_BUGS)}.")
    n = tokens.shape[-1]
    resid = W_E[tokens] + W_pos[:n]                                 # [batch, n, d_model]
    q = resid[:, -1] @ W_Q                                          # [batch, d_head]
    k = resid @ W_K                                                 # [batch, n, d_head]
    scores = torch.einsum("bh,bph->bp", q, k) * score_scale(W_Q.shape[-1], bugs)              # the last position sees all
    attended = torch.einsum("bp,bpd->bd", scores.softmax(-1), resid @ W_V) @ W_O
    logits = (resid[:, -1] + attended) @ W_U
    target = tokens[:, -1] if "last_token_target" in bugs else tokens.max(-1).values
    return torch.nn.functional.cross_entropy(logits, target)


def debug_circuits(W_E, W_pos, W_Q, W_K, W_V, W_O, W_U) -> tuple[Tensor, Tensor, Tensor, Tensor, Tensor]:
    """The bug lab's fixed circuits function: (EQKE, EQKP, EU, EVOU, PVOU), no bug left."""
    return circuits(W_E, W_pos, W_Q, W_K, W_V, W_O, W_U).as_tuple()


def debug_training_loss(tokens: Tensor, W_E, W_pos, W_Q, W_K, W_V, W_O, W_U) -> Tensor:
    """The bug lab's fixed training loss (a 0-d tensor): max target, scores divided by sqrt(d_head)."""
    return training_loss(tokens, W_E, W_pos, W_Q, W_K, W_V, W_O, W_U)


# --------------------------------------------------------------------------- known mistakes
def _bug_subsets(names) -> list[tuple[str, ...]]:
    names = list(names)
    return [combo for r in range(1, len(names) + 1) for combo in itertools.combinations(names, r)]


def circuit_bug_mistakes() -> list[Mistake]:
    """Every non-empty subset of the circuit bugs as a known mistake of ``debug_circuits``."""
    out = []
    for combo in _bug_subsets(CIRCUIT_BUGS):
        def fn(W_E, W_pos, W_Q, W_K, W_V, W_O, W_U, combo=combo):
            return buggy_circuits(W_E, W_pos, W_Q, W_K, W_V, W_O, W_U, bugs=combo).as_tuple()
        left = "; ".join(CIRCUIT_BUGS[b] for b in combo)
        count = f"{len(combo)} bug{'s' if len(combo) > 1 else ''} left"
        out.append(Mistake(f"bugs left: {', '.join(combo)}", f"{count}: {left}.", fn))
    return out


def training_bug_mistakes() -> list[Mistake]:
    """Every subset of the training bugs (and reading the first position) for ``debug_training_loss``."""
    out = []
    for combo in _bug_subsets(TRAINING_BUGS):
        def fn(tokens, W_E, W_pos, W_Q, W_K, W_V, W_O, W_U, combo=combo):
            return training_loss(tokens, W_E, W_pos, W_Q, W_K, W_V, W_O, W_U, bugs=combo)
        left = "; ".join(TRAINING_BUGS[b] for b in combo)
        count = f"{len(combo)} bug{'s' if len(combo) > 1 else ''} left"
        out.append(Mistake(f"bugs left: {', '.join(combo)}", f"{count}: {left}.", fn))

    def first_position(tokens, W_E, W_pos, W_Q, W_K, W_V, W_O, W_U):
        resid = W_E[tokens] + W_pos[: tokens.shape[-1]]
        logits = resid[:, 0] @ W_U
        return torch.nn.functional.cross_entropy(logits, tokens.max(-1).values)
    out.append(Mistake("logits of the first position",
                       "logits of the first position: the loss reads the first position; the max is read at the last position, the only "
                       "one that sees every token.", first_position))
    return out
