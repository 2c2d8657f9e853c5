"""Lesson 4 graded exercises: the circuits of the max-of-4 model, its SVD view, and the bug lab.

Cases: random single-head weights of several shapes and seeds (the max-of-4 sizes,
d_model != d_head, n_ctx 1, 2 and 6, float32 and float64) and, when its checkpoint loads,
the trained ``max_of_4`` model in float32 and float64. The mistake catalogue names each
known wrong variant with the factor it produces.
"""
from __future__ import annotations

import functools
import math
from typing import Any, Callable, Optional

import torch

from mechinterp_edu.course import collector
from mechinterp_edu.grader.spec import Case, Exercise, Mistake
from mechinterp_edu.lessons.max_of_k import bug_lab
from mechinterp_edu.lessons.max_of_k import reference as ref

EXERCISES: list[Exercise] = []
register_exercise = collector(EXERCISES)

LESSON = 4
F32, F64 = torch.float32, torch.float64
KEYS = ref.WEIGHT_NAMES          # W_E, W_pos, W_Q, W_K, W_V, W_O, W_U

# (label, d_vocab, n_ctx, d_model, d_head, seed, dtype)
RANDOM_SHAPES: tuple[tuple, ...] = (
    ("random, max-of-4 sizes, float64", 64, 4, 32, 32, 0, F64),
    ("random, d_model 16, d_head 8, float32", 10, 5, 16, 8, 1, F32),
    ("random, n_ctx 2, float64", 7, 2, 6, 4, 2, F64),
    ("random, n_ctx 6, float32", 12, 6, 8, 8, 3, F32),
    ("random, n_ctx 1, float64", 5, 1, 4, 4, 4, F64),
    ("random, d_model 12, d_head 3, float64", 9, 3, 12, 3, 5, F64),
)


def _dtype_name(dtype: torch.dtype) -> str:
    return str(dtype).replace("torch.", "")


@functools.lru_cache(maxsize=2)
def trained_weights(dtype: torch.dtype) -> Optional[dict[str, torch.Tensor]]:
    """The shipped max_of_4 weights (head axis removed), or None if the checkpoint cannot be loaded."""
    try:
        from mechinterp_edu.lessons.max_of_k.model import weights_from_checkpoint
        return weights_from_checkpoint(dtype)
    except Exception:  # noqa: BLE001 - a missing checkpoint drops these cases, it does not break grading
        return None


def weight_cases() -> list[tuple[str, dict[str, torch.Tensor], dict[str, Any]]]:
    out = []
    for label, v, n, m, d, seed, dtype in RANDOM_SHAPES:
        w = ref.random_weights(v, n, m, d, seed=seed, dtype=dtype)
        info = {"model": f"random (seed {seed})", "d_vocab": v, "n_ctx": n, "d_model": m, "d_head": d,
                "dtype": _dtype_name(dtype)}
        out.append((label, w, info))
    for dtype in (F32, F64):
        w = trained_weights(dtype)
        if w is None:
            continue
        v, m = w["W_E"].shape
        info = {"model": "max_of_4 (trained)", "d_vocab": v, "n_ctx": w["W_pos"].shape[0], "d_model": m,
                "d_head": w["W_Q"].shape[1], "dtype": _dtype_name(dtype)}
        out.append((f"trained max_of_4, {_dtype_name(dtype)}", w, info))
    return out


def _tokens(batch: int, n_ctx: int, d_vocab: int, seed: int) -> torch.Tensor:
    gen = torch.Generator().manual_seed(4000 + seed)
    tokens = torch.randint(0, d_vocab, (batch, n_ctx), generator=gen)
    if n_ctx > 1 and batch > 2:
        tokens[0] = d_vocab - 1                  # all tokens equal: the max appears n_ctx times
        tokens[1, :-1] = 0                       # the query is the max
        tokens[1, -1] = d_vocab - 1
    return tokens


def _cases(keys: tuple[str, ...]) -> Callable[[], list[Case]]:
    def build() -> list[Case]:
        return [Case(label, tuple(w[k] for k in keys), info) for label, w, info in weight_cases()]
    return build


def _token_cases(batch: int = 48) -> list[Case]:
    cases = []
    for i, (label, w, info) in enumerate(weight_cases()):
        tokens = _tokens(batch, info["n_ctx"], info["d_vocab"], i)
        cases.append(Case(label, (tokens, *(w[k] for k in KEYS)), dict(info, batch=batch)))
    return cases


# --------------------------------------------------------------------------- wrong variants
def _P(W_pos):
    P_avg = W_pos.mean(0)
    return P_avg, W_pos - P_avg


def _qk_variant(query: str = "E_q", key: str = "E_bar", scale: str = "sqrt", transpose: bool = False):
    """EQKE / EQKP variants: which query table, which key table, which score scale."""
    def tables(W_E, W_pos):
        P_avg, P_hat = _P(W_pos)
        return {"E_q": W_E + W_pos[-1], "E": W_E, "E_bar": W_E + P_avg, "E_first": W_E + W_pos[0],
                "P_hat": P_hat, "W_pos": W_pos}

    def fn(W_E, W_pos, W_Q, W_K):
        t = tables(W_E, W_pos)
        d = W_Q.shape[-1]
        factor = {"sqrt": 1 / math.sqrt(d), "d": 1 / d, "none": 1.0, "times_sqrt": math.sqrt(d)}[scale]
        out = t[query] @ W_Q @ W_K.T @ t[key].T * factor
        return out.T if transpose else out
    return fn


SCALE_MISTAKES = {
    "divided by d_head": (
        "The scores are divided by d_head instead of sqrt(d_head): everything is 1/sqrt(d_head) too small "
        "(0.177 for d_head = 32). This is one way to get the notes' 'EQKE is 0.1x expected'.", "d"),
    "no 1/sqrt(d_head) scale": (
        "The 1/sqrt(d_head) scale is missing: the table is sqrt(d_head) too large (5.66 for d_head = 32); "
        "the model divides q.k by sqrt(d_head) before the softmax.", "none"),
    "sqrt(d_head) multiplied": (
        "The scores are multiplied by sqrt(d_head) instead of divided: a factor d_head too large "
        "(32). The notes' trainer had the same bug, the other way round in its effect on the weights.",
        "times_sqrt"),
}

EQKE_MISTAKES: dict[str, tuple[str, Callable]] = {
    **{name: (msg, _qk_variant(scale=s)) for name, (msg, s) in SCALE_MISTAKES.items()},
    "dropped the query's positional term": (
        "The query side is W_E alone: the query sits at the last position, so its row must be "
        "E_q = W_E + W_pos[-1]. Dropping W_pos[-1] changes every row (in the trained model it shrinks "
        "EQKE, another source of the notes' 'EQKE is 0.1x expected').", _qk_variant(query="E")),
    "keys without P_avg": (
        "The key side is W_E alone: with the mean+diff split the keys are E_bar = W_E + P_avg "
        "(P_avg is the mean of W_pos, which every position carries).", _qk_variant(key="E")),
    "query at the first position": (
        "The query side used W_pos[0]; the query is the last token, at position n_ctx - 1: "
        "E_q = W_E + W_pos[-1].", _qk_variant(query="E_first")),
    "E_q on the key side": (
        "The key side used E_q = W_E + W_pos[-1]: keys sit at every position, so they get the average "
        "P_avg (E_bar = W_E + P_avg); the rest goes into EQKP.", _qk_variant(key="E_q")),
    "E_bar on the query side": (
        "The query side used E_bar = W_E + P_avg; the query is always at the last position, so it is "
        "E_q = W_E + W_pos[-1].", _qk_variant(query="E_bar")),
    "query and key swapped": (
        "Rows must be the query token and columns the key token: E_q W_Q W_K^T E_bar^T, not its "
        "transpose.", _qk_variant(transpose=True)),
}

EQKP_MISTAKES: dict[str, tuple[str, Callable]] = {
    "raw W_pos in EQKP": (
        "EQKP used the raw W_pos instead of P_hat = W_pos - P_avg. P_avg is already in E_bar, so it is "
        "counted twice: each row gains one constant (about 15-25x the size of the true EQKP in the trained "
        "model: the notes' 'EQKP is 10x expected'). The softmax ignores a per-row constant, so the logits "
        "do not change and a logits-only check misses it.", _qk_variant(key="W_pos")),
    **{name: (msg, _qk_variant(key="P_hat", scale=s)) for name, (msg, s) in SCALE_MISTAKES.items()},
    "dropped the query's positional term": (
        "The query side is W_E alone: it must be E_q = W_E + W_pos[-1] (the query sits at the last "
        "position).", _qk_variant(query="E", key="P_hat")),
    "query at the first position": (
        "The query side used W_pos[0]; the query is at the last position: E_q = W_E + W_pos[-1].",
        _qk_variant(query="E_first", key="P_hat")),
}


def _eu_variant(query: str):
    def fn(W_E, W_pos, W_U):
        return {"E": W_E, "E_bar": W_E + W_pos.mean(0), "E_first": W_E + W_pos[0]}[query] @ W_U
    return fn


EU_MISTAKES: dict[str, tuple[str, Callable]] = {
    "dropped the query's positional term": (
        "EU is W_E W_U: the direct path starts from the query's residual stream, which also holds "
        "W_pos[-1]. Use E_q = W_E + W_pos[-1].", _eu_variant("E")),
    "E_bar on the query side": (
        "EU used E_bar = W_E + P_avg; the direct path reads the last position: E_q = W_E + W_pos[-1].",
        _eu_variant("E_bar")),
    "query at the first position": (
        "EU used W_pos[0]; the query is at the last position: E_q = W_E + W_pos[-1].", _eu_variant("E_first")),
}


def _evou_variant(kind: str):
    def fn(W_E, W_pos, W_V, W_O, W_U):
        if kind == "no_p_avg":
            return W_E @ W_V @ W_O @ W_U
        if kind == "e_q":
            return (W_E + W_pos[-1]) @ W_V @ W_O @ W_U
        raise ValueError(kind)
    return fn


EVOU_MISTAKES: dict[str, tuple[str, Callable]] = {
    "EVOU without P_avg": (
        "EVOU is W_E W_V W_O W_U: every attended position carries P_avg too, so the table is "
        "E_bar W_V W_O W_U with E_bar = W_E + P_avg. Leaving it out drops the same row vector "
        "P_avg W_V W_O W_U from every output.", _evou_variant("no_p_avg")),
    "E_q in EVOU": (
        "EVOU used E_q = W_E + W_pos[-1]: the values come from every position, so use the average "
        "E_bar = W_E + P_avg; the per-position rest is PVOU.", _evou_variant("e_q")),
}

PVOU_MISTAKES: dict[str, tuple[str, Callable]] = {
    "raw W_pos in PVOU": (
        "PVOU used the raw W_pos: P_avg is already inside EVOU (through E_bar), so use "
        "P_hat = W_pos - P_avg.", lambda W_pos, W_V, W_O, W_U: W_pos @ W_V @ W_O @ W_U),
}


def _mdp_variant(kind: str):
    def fn(W_pos):
        if kind == "not_centred":
            return W_pos.mean(0), W_pos
        if kind == "sum":
            s = W_pos.sum(0)
            return s, W_pos - s
        if kind == "last":
            return W_pos[-1], W_pos - W_pos[-1]
        if kind == "axis":
            m = W_pos.mean(1)
            return m, W_pos - m[:, None]
        raise ValueError(kind)
    return fn


MEAN_DIFF_MISTAKES: dict[str, tuple[str, Callable]] = {
    "P_hat not centred": (
        "P_hat is W_pos itself: subtract the mean, P_hat = W_pos - P_avg, so its rows average to zero.",
        _mdp_variant("not_centred")),
    "sum instead of mean": (
        "P_avg is the sum of the positional embeddings; it is their mean (divide by n_ctx).", _mdp_variant("sum")),
    "last position instead of the mean": (
        "P_avg is W_pos[-1]: the mean+diff split uses the mean over all positions.", _mdp_variant("last")),
    "mean over the wrong axis": (
        "The mean ran over d_model (axis 1); average over positions (axis 0) to get a [d_model] vector.",
        _mdp_variant("axis")),
}


def _logits_variant(kind: str):
    def fn(tokens, W_E, W_pos, W_Q, W_K, W_V, W_O, W_U):
        c = ref.circuits(W_E, W_pos, W_Q, W_K, W_V, W_O, W_U)
        x_q = tokens[:, -1]
        scores = c.EQKE[x_q[:, None], tokens] + c.EQKP[x_q]
        if kind == "no_eqkp":
            scores = c.EQKE[x_q[:, None], tokens]
        if kind == "divide_by_d_head":
            scores = scores / math.sqrt(W_Q.shape[-1])
        if kind == "first_token_query":
            x0 = tokens[:, 0]
            scores = c.EQKE[x0[:, None], tokens] + c.EQKP[x0]
        weights = {"no_softmax": lambda s: s, "batch_softmax": lambda s: s.softmax(0)}.get(
            kind, lambda s: s.softmax(-1))(scores)
        values = c.EVOU[tokens] + (0 if kind == "no_pvou" else c.PVOU)
        direct = 0 if kind == "no_direct" else c.EU[x_q]
        return direct + torch.einsum("bi,biv->bv", weights, values)
    return fn


LOGITS_MISTAKES: dict[str, tuple[str, Callable]] = {
    "no softmax": ("The scores were used as attention weights directly: apply a softmax over the key "
                   "positions first.", _logits_variant("no_softmax")),
    "softmax over the batch": ("The softmax ran over the batch (axis 0); it runs over key positions "
                               "(the last axis).", _logits_variant("batch_softmax")),
    "missing PVOU": ("The positional part of the values, PVOU[i], is missing: each attended position "
                     "writes EVOU[x_i] + PVOU[i].", _logits_variant("no_pvou")),
    "missing the direct path": ("EU[x_q], the direct path from the query token, is missing.",
                                _logits_variant("no_direct")),
    "missing EQKP": ("The scores lack EQKP[x_q, i]: the score of key i is EQKE[x_q, x_i] + EQKP[x_q, i].",
                     _logits_variant("no_eqkp")),
    "scaled twice": ("The scores were divided by sqrt(d_head) again: EQKE and EQKP already include it.",
                     _logits_variant("divide_by_d_head")),
    "query is the first token": ("The query is the last token x[:, -1], not the first.",
                                 _logits_variant("first_token_query")),
}


def _logits_terms(case: Case) -> dict[str, torch.Tensor]:
    tokens, *w = case.args
    c = ref.circuits(*w)
    x_q = tokens[:, -1]
    pattern = ref.scores_from_tables(tokens, c).softmax(-1)
    return {"direct path EU[x_q]": c.EU[x_q],
            "attention-weighted PVOU": pattern @ c.PVOU,
            "attention-weighted EVOU": torch.einsum("bi,biv->bv", pattern, c.EVOU[tokens])}


def _eqke_terms(case: Case) -> dict[str, torch.Tensor]:
    W_E, W_pos, W_Q, W_K = case.args
    d = W_Q.shape[-1]
    E_bar = W_E + W_pos.mean(0)
    query_pos = (W_pos[-1] @ W_Q @ W_K.T @ E_bar.T / math.sqrt(d)).expand(W_E.shape[0], -1)
    return {"query positional term (W_pos[-1])": query_pos}


def _eu_terms(case: Case) -> dict[str, torch.Tensor]:
    W_E, W_pos, W_U = case.args
    return {"query positional term (W_pos[-1] W_U)": (W_pos[-1] @ W_U).expand(W_E.shape[0], -1)}


def _evou_terms(case: Case) -> dict[str, torch.Tensor]:
    W_E, W_pos, W_V, W_O, W_U = case.args
    return {"P_avg term": (W_pos.mean(0) @ W_V @ W_O @ W_U).expand(W_E.shape[0], -1)}


# --------------------------------------------------------------------------- SVD view
def rank_one_cases() -> list[Case]:
    cases = []
    gen = torch.Generator().manual_seed(44)
    for label, size, strength, increasing, dtype in (
        ("planted rank one + noise, increasing, float64", 12, 30.0, True, F64),
        ("planted rank one + noise, decreasing, float64", 9, 20.0, False, F64),
        ("planted rank one + noise, float32", 16, 40.0, True, F32),
        ("planted rank one, 3 tokens, float64", 3, 10.0, False, F64),
    ):
        index = torch.arange(size, dtype=F64)
        v = (index - index.mean()) + 0.3 * torch.randn(size, generator=gen, dtype=F64)
        v = v if increasing else -v
        u = 1.0 + 0.2 * torch.randn(size, generator=gen, dtype=F64)
        u = u if torch.rand(1, generator=gen).item() < 0.5 else -u
        M = strength * torch.outer(u / u.norm(), v / v.norm()) + 0.3 * torch.randn(size, size, generator=gen, dtype=F64)
        cases.append(Case(label, (M.to(dtype),), {"d_vocab": size, "dtype": _dtype_name(dtype)}))
    for dtype in (F32, F64):
        w = trained_weights(dtype)
        if w is not None:
            M = ref.eqke(w["W_E"], w["W_pos"], w["W_Q"], w["W_K"])
            cases.append(Case(f"trained max_of_4 EQKE, {_dtype_name(dtype)}", (M,),
                              {"d_vocab": M.shape[0], "dtype": _dtype_name(dtype)}))
    return cases


def _rank_one_compare(got, expected, case: Case) -> Optional[str]:
    ratio, size, query = got
    e_ratio, e_size, e_query = expected
    float32 = case.info.get("dtype") == "float32"
    rtol = 5e-3 if float32 else 1e-6
    atol = 2e-3 if float32 else 1e-6
    try:
        ratio = float(ratio)
    except (TypeError, ValueError):
        return f"item 0 must be a number (sigma1 / sigma2), got {type(ratio).__name__}"
    if not math.isfinite(ratio) or abs(ratio - e_ratio) > rtol * abs(e_ratio):
        if e_ratio and abs(ratio * e_ratio - 1) <= 1e-2:
            return (f"sigma ratio {ratio:.6g} is the inverse of the expected {e_ratio:.6g}: "
                    "return sigma1 / sigma2 (largest over second largest)")
        return f"sigma1 / sigma2 should be {e_ratio:.6g}, got {ratio:.6g} (case {case.label})"
    for name, g, e in (("size direction", size, e_size), ("query direction", query, e_query)):
        if tuple(g.shape) != tuple(e.shape):
            return f"the {name} should have shape {tuple(e.shape)}, got {tuple(g.shape)}"
        g, e = g.double(), e.double()
        if torch.allclose(g, e, atol=atol, rtol=0):
            continue
        if torch.allclose(g, -e, atol=atol, rtol=0):
            if name == "size direction":
                return ("the size direction has the opposite sign: turn it so that it increases with the "
                        f"token index (positive correlation with 0..d_vocab-1) (case {case.label})")
            return ("the query direction has the opposite sign: once the size direction v is fixed, take "
                    f"u = EQKE v / sigma1 so that EQKE ~ sigma1 u v^T with sigma1 > 0 (case {case.label})")
        if abs(float(g.norm()) - 1) > 1e-3:
            return f"the {name} should have unit norm, got norm {float(g.norm()):.6g} (case {case.label})"
        return (f"the {name} differs from the expected singular vector (max error "
                f"{float((g - e).abs().max()):.3g}, case {case.label}): the size direction is the first "
                "right singular vector (over keys, Vh[0]), the query direction the first left one (U[:, 0])")
    return None


def _rank_one_variant(kind: str):
    def fn(M):
        ratio, v, u = ref.eqke_rank_one(M)
        if kind == "inverse_ratio":
            return 1 / ratio, v, u
        if kind == "swapped":
            return ratio, u, v
        raise ValueError(kind)
    return fn


RANK_ONE_MISTAKES: dict[str, tuple[str, Callable]] = {
    "inverse ratio": ("The ratio is sigma2 / sigma1: return the largest singular value over the second.",
                      _rank_one_variant("inverse_ratio")),
    "left and right swapped": (
        "The size direction is over key tokens: it is the first right singular vector (row 0 of Vh, "
        "EQKE's columns); the query direction is the first left one (column 0 of U).",
        _rank_one_variant("swapped")),
}


# --------------------------------------------------------------------------- bug lab
def loss_cases() -> list[Case]:
    cases = []
    for i, (label, w, info) in enumerate(weight_cases()):
        if info["n_ctx"] < 2:
            continue                                  # the last token is the max: the bugs would not show
        batch = 256 if "trained" in info["model"] else 64
        tokens = _tokens(batch, info["n_ctx"], info["d_vocab"], 10 + i)
        scale = 1.0 if "trained" in info["model"] else 3.0
        w = {k: v * (scale if k in ("W_Q", "W_K") else 1.0) for k, v in w.items()}
        cases.append(Case(label, (tokens, *(w[k] for k in KEYS)), dict(info, batch=batch)))
    return cases


def _mistakes(table: dict[str, tuple[str, Callable]]) -> list[Mistake]:
    return [Mistake(name, f"{name}: {message}", fn) for name, (message, fn) in table.items()]


# --------------------------------------------------------------------------- registration
register_exercise(Exercise(
    lesson=LESSON, name="mean_diff_positions", points=1, reference=ref.mean_diff_positions,
    cases=_cases(("W_pos",)), output="tuple",
    summary="P_avg = mean of W_pos over positions, P_hat = W_pos - P_avg.",
    difficulty=1, minutes=5, mistakes=_mistakes(MEAN_DIFF_MISTAKES),
))

register_exercise(Exercise(
    lesson=LESSON, name="eqke", points=2, reference=ref.eqke, cases=_cases(("W_E", "W_pos", "W_Q", "W_K")),
    summary="EQKE = E_q W_Q W_K^T E_bar^T / sqrt(d_head), [d_vocab (query), d_vocab (key)].",
    difficulty=2, minutes=15, terms=_eqke_terms, mistakes=_mistakes(EQKE_MISTAKES),
))

register_exercise(Exercise(
    lesson=LESSON, name="eqkp", points=2, reference=ref.eqkp, cases=_cases(("W_E", "W_pos", "W_Q", "W_K")),
    summary="EQKP = E_q W_Q W_K^T P_hat^T / sqrt(d_head), [d_vocab (query), n_ctx (key position)].",
    difficulty=2, minutes=10, mistakes=_mistakes(EQKP_MISTAKES),
))

register_exercise(Exercise(
    lesson=LESSON, name="eu", points=1, reference=ref.eu, cases=_cases(("W_E", "W_pos", "W_U")),
    summary="EU = E_q W_U: the direct path from the query token.",
    difficulty=1, minutes=5, terms=_eu_terms, mistakes=_mistakes(EU_MISTAKES),
))

register_exercise(Exercise(
    lesson=LESSON, name="evou", points=1, reference=ref.evou, cases=_cases(("W_E", "W_pos", "W_V", "W_O", "W_U")),
    summary="EVOU = E_bar W_V W_O W_U: what attending to each token writes to the logits.",
    difficulty=1, minutes=5, terms=_evou_terms, mistakes=_mistakes(EVOU_MISTAKES),
))

register_exercise(Exercise(
    lesson=LESSON, name="pvou", points=1, reference=ref.pvou, cases=_cases(("W_pos", "W_V", "W_O", "W_U")),
    summary="PVOU = P_hat W_V W_O W_U: what attending to each position adds.",
    difficulty=1, minutes=5, mistakes=_mistakes(PVOU_MISTAKES),
))

register_exercise(Exercise(
    lesson=LESSON, name="logits_from_circuits", points=3, reference=ref.logits_from_circuits,
    cases=_token_cases,
    summary="Last-position logits EU[x_q] + sum_i softmax_i(EQKE[x_q,x_i] + EQKP[x_q,i]) (EVOU[x_i] + PVOU[i]).",
    difficulty=2, minutes=20, terms=_logits_terms, mistakes=_mistakes(LOGITS_MISTAKES),
))

register_exercise(Exercise(
    lesson=LESSON, name="eqke_rank_one", points=2, reference=ref.eqke_rank_one, cases=rank_one_cases,
    output="tuple", compare=_rank_one_compare,
    summary="(sigma1 / sigma2, size direction, query direction) of EQKE with the signs fixed.",
    difficulty=2, minutes=15, mistakes=_mistakes(RANK_ONE_MISTAKES),
))

register_exercise(Exercise(
    lesson=LESSON, name="debug_circuits", points=3, reference=bug_lab.debug_circuits,
    cases=_cases(KEYS), output="tuple",
    summary="Bug lab: fix buggy_circuits (three bugs) and return (EQKE, EQKP, EU, EVOU, PVOU).",
    difficulty=2, minutes=20, mistakes=bug_lab.circuit_bug_mistakes(),
))

register_exercise(Exercise(
    lesson=LESSON, name="debug_training_loss", points=2, reference=bug_lab.debug_training_loss,
    cases=loss_cases,
    summary="Bug lab: fix buggy_training_loss (two bugs): cross-entropy of the last position against the max.",
    difficulty=2, minutes=15, mistakes=bug_lab.training_bug_mistakes(),
))

__all__ = ["EQKE_MISTAKES", "EQKP_MISTAKES", "EU_MISTAKES", "EVOU_MISTAKES", "LOGITS_MISTAKES",
           "MEAN_DIFF_MISTAKES", "PVOU_MISTAKES", "RANK_ONE_MISTAKES", "loss_cases", "rank_one_cases",
           "trained_weights", "weight_cases"]

# The compact proofs (lesson 4, part 7): their specs live with the proofs.
from mechinterp_edu.lessons.max_of_k.proof_exercises import PROOF_EXERCISES  # noqa: E402

EXERCISES.extend(PROOF_EXERCISES)
