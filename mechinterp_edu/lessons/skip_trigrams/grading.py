"""Lesson 3 graded exercises: skip_trigrams_in, skip_trigrams_at_step (fix the notes),
skip_trigram_scores, top_skip_trigrams.

Cases: token lists of length 0-14 (lengths 1, 2 and 3, repeated tokens, a sequence of the
toy language); random weights of several shapes and seeds (one head, d_head > d_model,
n_ctx = 1 and 2, float32 and float64) and, when its checkpoint loads, the trained
``skip_trigrams`` model in float32 and float64. The mistake catalogue holds each known wrong
variant with the exercise's signature.
"""
from __future__ import annotations

import math
from typing import Any, Callable, Optional

import torch

from mechinterp_edu.course import collector
from mechinterp_edu.grader.spec import Case, Exercise, Mistake
from mechinterp_edu.lessons.skip_trigrams import reference as ref
from mechinterp_edu.models.toys import random_weights

EXERCISES: list[Exercise] = []
register_exercise = collector(EXERCISES)

LESSON = 3
F32, F64 = torch.float32, torch.float64
WEIGHT_KEYS = ("W_E", "W_pos", "W_Q", "W_K", "W_V", "W_O", "W_U")

# (label, d_vocab, d_model, n_heads, d_head, n_ctx, seed, dtype)
RANDOM_SHAPES: tuple[tuple, ...] = (
    ("random, 4 heads, d_head 2, float64", 7, 8, 4, 2, 6, 0, F64),
    ("random, 3 heads, float32", 9, 12, 3, 4, 9, 1, F32),
    ("random, one head, float64", 5, 6, 1, 3, 4, 2, F64),
    ("random, d_head > d_model, n_ctx 2, float32", 6, 4, 2, 6, 2, 3, F32),
    ("random, n_ctx 1, float64", 4, 5, 2, 2, 1, 4, F64),
)

TOKEN_LISTS: tuple[tuple[str, list[int]], ...] = (
    ("empty list", []),
    ("length 1", [4]),
    ("length 2", [4, 7]),
    ("length 3", [1, 2, 3]),
    ("length 3, all equal", [5, 5, 5]),
    ("length 4, repeats", [2, 9, 2, 9]),
    ("length 6, repeats", [3, 1, 4, 1, 5, 9]),
)


# --------------------------------------------------------------------------- inputs
def _random_weights(d_vocab, d_model, n_heads, d_head, n_ctx, seed, dtype) -> dict[str, torch.Tensor]:
    return random_weights(d_vocab, d_model, n_heads, d_head, n_ctx, seed=300 + seed, dtype=dtype)


_TRAINED: dict[torch.dtype, dict[str, torch.Tensor]] = {}


def trained_weights(dtype: torch.dtype) -> Optional[dict[str, torch.Tensor]]:
    """Layer-0 weights of the shipped skip_trigrams model, or None if it cannot be loaded."""
    if dtype not in _TRAINED:
        try:
            # Straight from the checkpoint: no bridge, no TransformerLens import.
            from mechinterp_edu.models.checkpoint_weights import attn_only_weights
            weights = attn_only_weights("skip_trigrams", dtype=dtype)
        except Exception:  # noqa: BLE001 - a missing checkpoint drops these cases, grading goes on
            return None
        _TRAINED[dtype] = {k: v for k, v in weights.items() if k in WEIGHT_KEYS}
    return _TRAINED[dtype]


def weight_cases() -> list[tuple[str, dict[str, torch.Tensor], dict[str, Any]]]:
    out = []
    for label, v, m, h, d, n, seed, dtype in RANDOM_SHAPES:
        out.append((label, _random_weights(v, m, h, d, n, seed, dtype),
                    {"model": f"random (seed {300 + seed})", "d_vocab": v, "d_model": m, "n_heads": h,
                     "d_head": d, "n_ctx": n}))
    for dtype in (F32, F64):
        w = trained_weights(dtype)
        if w is not None:
            v, m = w["W_E"].shape
            h, _, d = w["W_Q"].shape
            out.append((f"trained skip_trigrams, {str(dtype).replace('torch.', '')}", w,
                        {"model": "skip_trigrams (trained)", "d_vocab": v, "d_model": m, "n_heads": h,
                         "d_head": d, "n_ctx": w["W_pos"].shape[0]}))
    return out


def _language_sequence() -> list[int]:
    try:
        from mechinterp_edu.lessons.skip_trigrams.model import sample_batch
    except Exception:  # noqa: BLE001
        return [0, 5, 19, 7, 31, 35, 2, 20, 34, 37, 6, 33, 1, 9]
    return sample_batch(1, torch.Generator().manual_seed(33))["tokens"][0, :-1].tolist()


def _random_lists() -> list[tuple[str, list[int]]]:
    gen = torch.Generator().manual_seed(303)
    out = []
    for n, vocab in ((8, 4), (11, 20), (14, 6)):
        out.append((f"random length {n}, {vocab} token values", torch.randint(vocab, (n,), generator=gen).tolist()))
    return out


def token_list_cases() -> list[Case]:
    lists = list(TOKEN_LISTS) + _random_lists() + [("a sequence of the toy language", _language_sequence())]
    return [Case(label, (tokens,), {"length": len(tokens)}) for label, tokens in lists]


def step_cases() -> list[Case]:
    out = []
    for label, tokens in list(TOKEN_LISTS[2:]) + _random_lists():
        for step in (0, 1, 3):
            out.append(Case(f"{label}, step {step}", (tokens, step), {"length": len(tokens), "step": step}))
    out.append(Case("range(8), step 1 (the notes' example)", (list(range(10, 18)), 1), {"step": 1}))
    out.append(Case("step longer than the list", ([1, 2, 3, 4], 5), {"step": 5}))
    return out


def score_cases() -> list[Case]:
    out = []
    for label, w, info in weight_cases():
        heads = sorted({0, info["n_heads"] - 1, 1 % info["n_heads"]})
        for head in heads:
            out.append(Case(f"{label}, head {head}", tuple(w[k] for k in WEIGHT_KEYS) + (head,), info))
    return out


def top_cases() -> list[Case]:
    out = []
    for label, w, info in weight_cases():
        trained = "trained" in label
        for k in ((24, 5) if trained else (1, 6)):
            out.append(Case(f"{label}, k {k}", tuple(w[key] for key in WEIGHT_KEYS) + (k,), info))
    return out


# --------------------------------------------------------------------------- wrong variants
def _positions_not_tokens(tokens):
    n = len(tokens)
    return {(j, i, i + 1) for i in range(1, n - 1) for j in range(i)}


def _sources_include_destination(tokens):
    t = list(tokens)
    return {(t[j], t[i], t[i + 1]) for i in range(1, len(t) - 1) for j in range(i + 1)}


def _c_is_destination(tokens):
    t = list(tokens)
    return {(t[j], t[i], t[i]) for i in range(1, len(t) - 1) for j in range(i)}


def _stops_one_early(tokens):
    t = list(tokens)
    return {(t[j], t[i], t[i + 1]) for i in range(1, len(t) - 2) for j in range(i)}


SET_MISTAKES: dict[str, tuple[str, Callable]] = {
    "positions instead of tokens": (
        "These are positions (j, i, i+1), not tokens. A skip-trigram is made of the token VALUES at "
        "those positions: (tokens[j], tokens[i], tokens[i+1]). (This is the notes' mistake: their "
        "sequence was range(8), where the two coincide.)", _positions_not_tokens),
    "sources j <= i": (
        "Your sources include j = i. The source A must be strictly earlier than the destination: "
        "j < i. Attending to itself is B's own token, which is a bigram, not a skip-trigram.",
        _sources_include_destination),
    "C taken as t[i]": (
        "Your C is the destination token t[i]. The model at position i reads B = t[i] and predicts "
        "the NEXT token: C = t[i+1].", _c_is_destination),
    "off-by-one at the end": (
        "The last destination is missing: i runs up to len(tokens) - 2 (its next token is the last "
        "one), so range(1, len(tokens) - 1).", _stops_one_early),
}


def _step_positions(tokens, step):
    return [(j, j + 1 + step, j + 2 + step) for j in range(len(tokens) - 2 - step)]


def _step_one_early(tokens, step):
    t = list(tokens)
    return [(t[j], t[j + 1 + step], t[j + 2 + step]) for j in range(len(t) - 3 - step)]


def _step_as_distance(tokens, step):
    t = list(tokens)
    if step == 0:
        return [(t[j], t[j], t[j + 1]) for j in range(len(t) - 1)]
    return [(t[j], t[j + step], t[j + step + 1]) for j in range(len(t) - 1 - step)]


STEP_MISTAKES: dict[str, tuple[str, Callable]] = {
    "positions instead of tokens": (
        "This returns the notes' index arithmetic (j, j+1+step, j+2+step). Look the tokens up at those "
        "positions: (tokens[j], tokens[j+1+step], tokens[j+2+step]).", _step_positions),
    "off-by-one at the end": (
        "The last triple is missing. The largest j is the one whose C index j + 2 + step equals "
        "len(tokens) - 1.", _step_one_early),
    "C taken as t[i]": (
        "Your C is B's own token. The model at B's position reads B and predicts the NEXT token: "
        "C = tokens[j + 2 + step].",
        lambda tokens, step: [(t[j], t[j + 1 + step], t[j + 1 + step])
                              for t in [list(tokens)] for j in range(len(t) - 2 - step)]),
    "step read as the distance from A to B": (
        "Here B sits `step` positions after A (with step 0, a token counted as its own source). In the "
        "notes, step counts the tokens SKIPPED between A and B, so B is at j + 1 + step (step 0 = "
        "ordinary trigrams).", _step_as_distance),
}


def _parts(W_E, W_pos, W_Q, W_K, W_V, W_O, W_U, head, *, positions=True, scale=True):
    x = W_E + W_pos.mean(0) if positions else W_E
    s = (x @ W_Q[head]) @ (x @ W_K[head]).T
    if scale:
        s = s / math.sqrt(W_Q.shape[-1])
    ov = x @ W_V[head] @ W_O[head] @ W_U
    return s, ov


def _centred(ov, over_a=True, over_c=True):
    if over_a:
        ov = ov - ov.mean(0, keepdim=True)
    if over_c:
        ov = ov - ov.mean(1, keepdim=True)
    return ov


def _logistic(s, n_ctx):
    return torch.sigmoid(s - s.mean(1, keepdim=True) - math.log(max(n_ctx - 1, 1)))


def _combine(attn_ba, ov):
    return attn_ba.T[:, :, None] * ov[:, None, :]


def _sc_unscaled(W_E, W_pos, W_Q, W_K, W_V, W_O, W_U, head):
    s, ov = _parts(W_E, W_pos, W_Q, W_K, W_V, W_O, W_U, head, scale=False)
    return _combine(_logistic(s, W_pos.shape[0]), _centred(ov))


def _sc_no_positions(W_E, W_pos, W_Q, W_K, W_V, W_O, W_U, head):
    s, ov = _parts(W_E, W_pos, W_Q, W_K, W_V, W_O, W_U, head, positions=False)
    return _combine(_logistic(s, W_pos.shape[0]), _centred(ov))


def _sc_raw_ov(W_E, W_pos, W_Q, W_K, W_V, W_O, W_U, head):
    s, ov = _parts(W_E, W_pos, W_Q, W_K, W_V, W_O, W_U, head)
    return _combine(_logistic(s, W_pos.shape[0]), ov)


def _sc_ov_c_only(W_E, W_pos, W_Q, W_K, W_V, W_O, W_U, head):
    s, ov = _parts(W_E, W_pos, W_Q, W_K, W_V, W_O, W_U, head)
    return _combine(_logistic(s, W_pos.shape[0]), _centred(ov, over_a=False))


def _sc_vocab_softmax(W_E, W_pos, W_Q, W_K, W_V, W_O, W_U, head):
    s, ov = _parts(W_E, W_pos, W_Q, W_K, W_V, W_O, W_U, head)
    return _combine(s.softmax(dim=1), _centred(ov))


def _sc_query_key_swapped(W_E, W_pos, W_Q, W_K, W_V, W_O, W_U, head):
    s, ov = _parts(W_E, W_pos, W_Q, W_K, W_V, W_O, W_U, head)
    return _combine(_logistic(s.T, W_pos.shape[0]), _centred(ov))


def _sc_raw_product(W_E, W_pos, W_Q, W_K, W_V, W_O, W_U, head):
    s, ov = _parts(W_E, W_pos, W_Q, W_K, W_V, W_O, W_U, head)
    return _combine(s, _centred(ov))


SCORE_MISTAKES: dict[str, tuple[str, Callable]] = {
    "QK not scaled": (
        "The QK scores are not divided by sqrt(d_head). The model scales them before the softmax, so "
        "the attention share must use the scaled score.", _sc_unscaled),
    "positions left out": (
        "You used W_E alone. Every token sits at the average position: x = W_E + W_pos.mean(0), in both "
        "the QK and the OV part.", _sc_no_positions),
    "OV not centred": (
        "The OV term is not centred. Subtract its mean over source tokens A (the effect of the average "
        "token the key replaced), then its mean over C (softmax ignores a shift of every logit).",
        _sc_raw_ov),
    "OV centred over C only": (
        "You centred the OV term over C but not over A. Replacing a background key by A changes the "
        "logits by ov[A] minus the MEAN ov row: subtract the mean over A too.", _sc_ov_c_only),
    "softmax over the vocabulary": (
        "You took a softmax over all A. The score uses A's share against n - 1 average keys: "
        "sigmoid(s - mean_A s - log(n - 1)).", _sc_vocab_softmax),
    "query and key swapped": (
        "Your attention is A's query against B's key. B (the destination) is the query and A (the "
        "source) the key: s[B, A] = q(B) . k(A).", _sc_query_key_swapped),
    "raw QK times OV": (
        "You multiplied the raw QK score by the OV term. A negative score (B avoids A) times a negative "
        "OV entry would then look like a strong trigram; use the attention share (a sigmoid) instead.",
        _sc_raw_product),
}


def _total(args) -> torch.Tensor:
    return ref.total_skip_trigram_scores(*[a.to(torch.float64) for a in args[:7]])


def _top_max_over_heads(W_E, W_pos, W_Q, W_K, W_V, W_O, W_U, k):
    S = ref.skip_trigram_scores_all(W_E, W_pos, W_Q, W_K, W_V, W_O, W_U)
    return ref.rank_triples(S.max(dim=0).values, k)


def _top_head_zero(W_E, W_pos, W_Q, W_K, W_V, W_O, W_U, k):
    return ref.rank_triples(ref.skip_trigram_scores(W_E, W_pos, W_Q, W_K, W_V, W_O, W_U, 0), k)


def _top_worst_first(W_E, W_pos, W_Q, W_K, W_V, W_O, W_U, k):
    return ref.rank_triples(-ref.total_skip_trigram_scores(W_E, W_pos, W_Q, W_K, W_V, W_O, W_U), k)


def _top_b_first(W_E, W_pos, W_Q, W_K, W_V, W_O, W_U, k):
    return [(b, a, c) for a, b, c in ref.top_skip_trigrams(W_E, W_pos, W_Q, W_K, W_V, W_O, W_U, k)]


TOP_MISTAKES: dict[str, tuple[str, Callable]] = {
    "max over heads": (
        "You ranked each triple by its best head. Heads add their outputs to the residual stream, so add "
        "their scores: sum over heads.", _top_max_over_heads),
    "one head only": (
        "These are the top triples of head 0 only. Rank the scores summed over every head.", _top_head_zero),
    "worst first": (
        "This list starts with the most negative scores. Best first: the largest summed scores.",
        _top_worst_first),
    "(B, A, C) order": (
        "Your tuples are (B, A, C). Return (A, B, C): source token first, then destination, then the "
        "predicted token.", _top_b_first),
}


def compare_rankings(got, expected, case: Case) -> Optional[str]:
    """Accept any list that has, rank by rank, the same summed score as the reference (ties may
    be reordered, and a tie at the cut-off may be broken either way)."""
    k = len(expected)
    got = [tuple(int(x) for x in t) for t in got]
    if len(got) != k:
        return f"expected {k} triples, got {len(got)}"
    if len(set(got)) != k:
        return "some triples appear more than once"
    total = _total(case.args)
    vocab = total.shape[0]
    for t in got:
        if len(t) != 3 or not all(0 <= x < vocab for x in t):
            return f"{t} is not a triple of token ids between 0 and {vocab - 1}"
    if k == 0:
        return None
    got_scores = torch.stack([total[t] for t in got])
    exp_scores = torch.stack([total[tuple(t)] for t in expected])
    low_precision = any(a.dtype != torch.float64 for a in case.args[:7])
    tol = (1e-4 if low_precision else 1e-9) * float(total.abs().max()) + 1e-12
    diff = (got_scores - exp_scores).abs()
    if bool((diff <= tol).all()):
        return None
    r = int((diff > tol).nonzero()[0, 0])
    return (f"rank {r} holds {got[r]} with summed score {float(got_scores[r]):.6g}; the triple at that rank "
            f"should score {float(exp_scores[r]):.6g} (e.g. {tuple(expected[r])})")


def _mistakes(table: dict[str, tuple[str, Callable]]) -> list[Mistake]:
    return [Mistake(name, message, fn) for name, (message, fn) in table.items()]


register_exercise(Exercise(
    lesson=LESSON, name="skip_trigrams_in", points=2, reference=ref.skip_trigrams_in,
    cases=token_list_cases, output="set",
    summary="Every (tokens[j], tokens[i], tokens[i+1]) with j < i <= len - 2, as a set of tuples.",
    difficulty=1, minutes=10, mistakes=_mistakes(SET_MISTAKES),
))

register_exercise(Exercise(
    lesson=LESSON, name="skip_trigrams_at_step", points=1, reference=ref.skip_trigrams_at_step,
    cases=step_cases, output="list",
    summary="The notes' enumerator corrected: (t[j], t[j+1+step], t[j+2+step]) for every j, as a list.",
    difficulty=1, minutes=10, mistakes=_mistakes(STEP_MISTAKES),
))

register_exercise(Exercise(
    lesson=LESSON, name="skip_trigram_scores", points=3, reference=ref.skip_trigram_scores,
    cases=score_cases, output="tensor",
    summary="S[A, B, C] = attn[B, A] * centred ov[A, C] of one head: [d_vocab, d_vocab, d_vocab].",
    difficulty=2, minutes=20, mistakes=_mistakes(SCORE_MISTAKES),
))

register_exercise(Exercise(
    lesson=LESSON, name="top_skip_trigrams", points=2, reference=ref.top_skip_trigrams,
    cases=top_cases, output="list", compare=compare_rankings,
    summary="The k (A, B, C) with the largest score summed over heads, best first.",
    difficulty=2, minutes=15, mistakes=_mistakes(TOP_MISTAKES),
))

__all__ = ["SCORE_MISTAKES", "SET_MISTAKES", "STEP_MISTAKES", "TOP_MISTAKES", "compare_rankings",
           "score_cases", "step_cases", "token_list_cases", "top_cases", "trained_weights", "weight_cases"]
