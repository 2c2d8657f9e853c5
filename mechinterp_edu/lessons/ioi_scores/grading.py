"""Lesson 5 graded exercises: projections, the score as a linear function, decompositions,
baselines, the four-term split and the share explained.

Cases: random tensors of several shapes and seeds (batch of one, one component, one
direction, non-orthogonal and unnormalised directions, float32 and float64) and, when its
checkpoint loads, real activations of the trained ``ioi_small`` model (head 2.1, END -> IO
with the S1 baseline) in float32 and float64. Components in the random cases come with the
LayerNorm scale of their sum, as in the model. Each catalogued mistake is a wrong variant
with the exercise's signature.
"""
from __future__ import annotations

import contextlib
import io
import math
from typing import Any, Callable

import torch

from mechinterp_edu.course import collector
from mechinterp_edu.grader.spec import Case, Exercise, Mistake
from mechinterp_edu.lessons.ioi_scores import reference as ref

EXERCISES: list[Exercise] = []
register_exercise = collector(EXERCISES)

LESSON = 5
F32, F64 = torch.float32, torch.float64
EPS = 1e-5
TOY_LAYER, TOY_HEAD, TOY_BATCH = 2, 1, 6


def _name(dtype) -> str:
    return str(dtype).replace("torch.", "")


# --------------------------------------------------------------------------- inputs
# (label, batch, n_components, d_model, d_head, k_directions, seed, dtype)
RANDOM: tuple[tuple, ...] = (
    ("random, batch 5, 4 components, d_model 8, float64", 5, 4, 8, 2, 2, 0, F64),
    ("random, batch 7, 6 components, d_model 16, float32", 7, 6, 16, 4, 3, 1, F32),
    ("random, one prompt, one component, one direction, float64", 1, 1, 6, 3, 1, 2, F64),
    ("random, batch 4, 9 components, d_model 12, float32", 4, 9, 12, 4, 1, 3, F32),
)


def _random_setup(batch, n, d, e, k, seed, dtype) -> dict[str, torch.Tensor]:
    g = torch.Generator().manual_seed(1000 + seed)

    def randn(*shape, s=1.0):
        return (torch.randn(*shape, generator=g, dtype=F64) * s).to(dtype)

    comps = randn(batch, n, d) * torch.linspace(0.5, 2.0, n, dtype=F64).to(dtype)[None, :, None]
    base = randn(batch, n, d)
    xq_comps = randn(batch, n, d, s=1.5)

    def scale_of(c):
        x = c.sum(1)
        return (x - x.mean(-1, keepdim=True)).pow(2).mean(-1).add(EPS).sqrt()

    # k directions, deliberately neither unit length nor orthogonal
    dirs = randn(batch, k, d) * 3.0
    if k > 1:
        dirs[:, 1] = dirs[:, 1] + 0.8 * dirs[:, 0]
    return {
        "comps": comps, "scale": scale_of(comps), "base": base, "scale_base": scale_of(base),
        "xq_comps": xq_comps, "scale_q": scale_of(xq_comps),
        "W_Q": randn(d, e, s=1 / math.sqrt(d)), "W_K": randn(d, e, s=1 / math.sqrt(d)),
        "b_Q": randn(e, s=0.7), "b_K": randn(e, s=0.7),
        "q": randn(batch, e), "k": randn(batch, e), "k_base": randn(batch, e),
        "vectors": randn(batch, d), "dirs": dirs,
        "u": randn(batch, d, s=4.0), "m": randn(batch, d, s=0.3), "m_base": randn(batch, d, s=0.3),
    }


_TOY: dict[torch.dtype, Any] = {}
TOY_SOURCE: dict[torch.dtype, str] = {}   # which path built the toy inputs (tests read it)


def _toy_model(dtype: torch.dtype):
    """The trained ioi_small as a plain-torch forward (no transformers / TransformerLens import);
    the TransformerBridge only if the checkpoint is not the folded GPT-2 state dict it reads."""
    from mechinterp_edu.lessons.ioi_scores import forward as ioi_forward

    try:
        model = ioi_forward.load(dtype=dtype)
        TOY_SOURCE[dtype] = "ioi_forward"
        return model
    except ioi_forward.UnsupportedCheckpoint as exc:
        from mechinterp_edu.lessons.ioi_scores.model import load
        with contextlib.redirect_stdout(io.StringIO()):   # the bridge prints device/dtype moves
            model = load(device="cpu", dtype=dtype)
        TOY_SOURCE[dtype] = f"bridge ({exc})"
        return model


def toy_inputs(dtype: torch.dtype):
    """Real decomposition inputs from the trained ioi_small model, or None if it cannot be loaded.
    Only successful loads are cached, so a checkpoint written later is picked up."""
    if dtype in _TOY:
        return _TOY[dtype]
    try:
        from mechinterp_edu.lessons.ioi_scores.data import encode_prompts, sample_prompts
        model = _toy_model(dtype)
        batch = encode_prompts(sample_prompts(TOY_BATCH, "test", seed=5), model.ioi_vocab)
        inp = ref.gather_head_inputs(model, batch, TOY_LAYER, TOY_HEAD, dtype=dtype)
    except Exception:  # noqa: BLE001 - a missing checkpoint drops these cases, it does not break grading
        return None
    _TOY[dtype] = inp
    return inp


def _toy_setup(inp) -> dict[str, torch.Tensor]:
    head_out = inp.q_components[:, inp.labels.index("1.0")]
    return {
        "comps": inp.k_components, "scale": inp.scale_k, "base": inp.base_components,
        "scale_base": inp.scale_base, "xq_comps": inp.q_components, "scale_q": inp.scale_q,
        "W_Q": inp.W_Q, "W_K": inp.W_K, "b_Q": inp.b_Q, "b_K": inp.b_K,
        "q": inp.q, "k": inp.k, "k_base": inp.k_base,
        "vectors": head_out, "dirs": torch.stack([inp.u, inp.u_s], 1),
        "u": inp.u, "m": inp.m_k, "m_base": inp.m_base,
    }


def setups() -> list[tuple[str, dict[str, torch.Tensor], dict[str, Any]]]:
    out = []
    for label, b, n, d, e, k, seed, dtype in RANDOM:
        out.append((label, _random_setup(b, n, d, e, k, seed, dtype),
                    {"model": f"random (seed {seed})", "batch": b, "n_components": n, "d_model": d,
                     "d_head": e, "k": k, "dtype": _name(dtype)}))
    for dtype in (F32, F64):
        inp = toy_inputs(dtype)
        if inp is None:
            continue
        s = _toy_setup(inp)
        out.append((f"trained ioi_small, head {TOY_LAYER}.{TOY_HEAD}, END -> IO, {_name(dtype)}", s,
                    {"model": "ioi_small (trained)", "batch": s["q"].shape[0], "n_components": inp.n,
                     "d_model": s["W_Q"].shape[0], "d_head": inp.d_head, "k": 2, "dtype": _name(dtype)}))
    return out


def _cases(make_args: Callable[[dict[str, torch.Tensor]], tuple]) -> Callable[[], list[Case]]:
    def make() -> list[Case]:
        return [Case(label, make_args(s), info) for label, s, info in setups()]
    return make


def _four_args(s, base: bool = False):
    """Arguments of four_terms at the target (or, with base=True, at the baseline position)."""
    comps, scale, m = (s["base"], s["scale_base"], s["m_base"]) if base else (s["comps"], s["scale"], s["m"])
    return (s["xq_comps"].sum(1), s["scale_q"], s["u"], comps.sum(1), scale, m,
            s["W_Q"], s["b_Q"], s["W_K"], s["b_K"])


# --------------------------------------------------------------------------- wrong variants
def _unnormalised_parallel(vectors, directions):
    if directions.ndim == 2:
        directions = directions[:, None]
    return torch.einsum("bk,bkd->bd", torch.einsum("bkd,bd->bk", directions, vectors), directions)


def _project_unnormalised(vectors, directions):
    par = _unnormalised_parallel(vectors, directions)
    return par, vectors - par


def _project_each_direction(vectors, directions):
    if directions.ndim == 2:
        directions = directions[:, None]
    unit = directions / directions.norm(dim=-1, keepdim=True)
    par = torch.einsum("bk,bkd->bd", torch.einsum("bkd,bd->bk", unit, vectors), unit)
    return par, vectors - par


def _fraction_mean_abs_cos_squared(vectors, directions):
    par, _ = ref.project(vectors, directions)
    return float((par.norm(dim=-1) / vectors.norm(dim=-1)).mean() ** 2)


def _fraction_unnormalised(vectors, directions):
    par = _unnormalised_parallel(vectors, directions)
    return float((par.pow(2).sum(-1) / vectors.pow(2).sum(-1)).mean())


def _fraction(vectors, directions):
    return float(ref.fraction_explained(vectors, directions))


def _map_no_bias(other, W, b, scale):
    linear, bias = ref.score_linear_in_keys(other, W, b, scale)
    return linear, torch.zeros_like(bias)


def _map_no_scale(other, W, b, scale):
    return ref.score_linear_in_keys(other, W, b, torch.ones_like(scale))


def _map_no_centring(other, W, b, scale):
    d_head = W.shape[1]
    return (torch.einsum("de,be->bd", W, other) / math.sqrt(d_head) / scale[:, None],
            torch.einsum("e,be->b", b, other) / math.sqrt(d_head))


def _map_no_sqrt(other, W, b, scale):
    linear, bias = ref.score_linear_in_keys(other, W, b, scale)
    d_head = W.shape[1]
    return linear * math.sqrt(d_head), bias * math.sqrt(d_head)


def _recomputed_ln(components):
    centred = components - components.mean(-1, keepdim=True)
    return centred / centred.pow(2).mean(-1, keepdim=True).add(EPS).sqrt()


def _decompose_recomputed_ln(other, components, scale, W, b):
    d_head = W.shape[1]
    parts = torch.einsum("bnd,de->bne", _recomputed_ln(components), W)
    contrib = torch.einsum("bne,be->bn", parts, other) / math.sqrt(d_head)
    bias = torch.einsum("e,be->b", b, other) / math.sqrt(d_head)
    return torch.cat([contrib, bias[:, None]], 1)


def _decompose_no_bias(other, components, scale, W, b):
    out = ref.decompose_keys(other, components, scale, W, b)
    out[:, -1] = 0
    return out


def _keys_base_keeps_bias(q, components, scale, components_base, scale_base, W_K, b_K):
    out = ref.decompose_keys_minus_baseline(q, components, scale, components_base, scale_base, W_K, b_K)
    out[:, -1] = torch.einsum("e,be->b", b_K, q) / math.sqrt(W_K.shape[1])
    return out


def _keys_base_one_scale(q, components, scale, components_base, scale_base, W_K, b_K):
    return ref.decompose_keys_minus_baseline(q, components, scale, components_base, scale, W_K, b_K)


def _keys_base_recomputed_ln(q, components, scale, components_base, scale_base, W_K, b_K):
    return (_decompose_recomputed_ln(q, components, scale, W_K, b_K)
            - _decompose_recomputed_ln(q, components_base, scale_base, W_K, b_K))


def _queries_base_drops_bias(k, k_base, components, scale, W_Q, b_Q):
    out = ref.decompose_queries_minus_baseline(k, k_base, components, scale, W_Q, b_Q)
    out[:, -1] = 0
    return out


def _queries_base_recomputed_ln(k, k_base, components, scale, W_Q, b_Q):
    return _decompose_recomputed_ln(k - k_base, components, scale, W_Q, b_Q)


def _four_bias_parallel(x_q, scale_q, u, x_k, scale_k, m, W_Q, b_Q, W_K, b_K):
    xq_par, xq_perp = ref.project(x_q, u)
    xk_par, xk_perp = ref.project(x_k, m)
    d_head = W_Q.shape[1]
    q_par = ref._frozen_ln(xq_par, scale_q) @ W_Q + b_Q
    q_perp = ref._frozen_ln(xq_perp, scale_q) @ W_Q
    k_par = ref._frozen_ln(xk_par, scale_k) @ W_K + b_K
    k_perp = ref._frozen_ln(xk_perp, scale_k) @ W_K
    terms = [(q_par * k_par), (q_par * k_perp), (q_perp * k_par), (q_perp * k_perp)]
    return torch.stack([t.sum(-1) for t in terms], 1) / math.sqrt(d_head)


def _four_unnormalised(x_q, scale_q, u, x_k, scale_k, m, W_Q, b_Q, W_K, b_K):
    d_head = W_Q.shape[1]
    xq_par = _unnormalised_parallel(x_q, u)
    xk_par = _unnormalised_parallel(x_k, m)
    q_par = ref._frozen_ln(xq_par, scale_q) @ W_Q
    q_perp = ref._frozen_ln(x_q - xq_par, scale_q) @ W_Q + b_Q
    k_par = ref._frozen_ln(xk_par, scale_k) @ W_K
    k_perp = ref._frozen_ln(x_k - xk_par, scale_k) @ W_K + b_K
    terms = [(q_par * k_par), (q_par * k_perp), (q_perp * k_par), (q_perp * k_perp)]
    return torch.stack([t.sum(-1) for t in terms], 1) / math.sqrt(d_head)


def _four_recomputed_ln(x_q, scale_q, u, x_k, scale_k, m, W_Q, b_Q, W_K, b_K):
    d_head = W_Q.shape[1]
    xq_par, xq_perp = ref.project(x_q, u)
    xk_par, xk_perp = ref.project(x_k, m)
    q_par = _recomputed_ln(xq_par) @ W_Q
    q_perp = _recomputed_ln(xq_perp) @ W_Q + b_Q
    k_par = _recomputed_ln(xk_par) @ W_K
    k_perp = _recomputed_ln(xk_perp) @ W_K + b_K
    terms = [(q_par * k_par), (q_par * k_perp), (q_perp * k_par), (q_perp * k_perp)]
    return torch.stack([t.sum(-1) for t in terms], 1) / math.sqrt(d_head)


def _share_mean_of_ratios(terms, terms_base):
    diff = terms - terms_base
    return (diff / diff.sum(-1, keepdim=True)).mean(0)


def _share_no_baseline(terms, terms_base):
    return terms.mean(0) / terms.sum(-1).mean()


def _share_args(s):
    return (ref.four_terms(*_four_args(s)), ref.four_terms(*_four_args(s, base=True)))


M = Mistake
RECOMPUTED_LN = ("recomputing LN per component",
                 "recomputing LN per component: each component was put through its own LayerNorm (its own "
                 "mean and scale). LayerNorm is linear only with the scale frozen from the cache: centre "
                 "each component, then divide by the ONE scale of the whole residual stream (the `scale` "
                 "argument). Otherwise the terms do not add up to the score.")
NO_BIAS = ("forgetting the bias term",
           "forgetting the bias term: the last column must hold the bias term (q . b_K / sqrt(d_head) on the "
           "key side, k . b_Q / sqrt(d_head) on the query side); without it the row does not sum to the score.")
UNNORMALISED = ("projecting on an unnormalised direction",
                "projecting on an unnormalised direction: (v . u) u is |u|^2 times the projection unless u "
                "has length 1. Divide by u . u (or normalise u first).")

# --------------------------------------------------------------------------- registration
register_exercise(Exercise(
    lesson=LESSON, name="project", points=2, reference=ref.project, output="tuple",
    cases=_cases(lambda s: (s["vectors"], s["dirs"])),
    summary="Split vectors [batch, d] into parts parallel and perpendicular to span(directions [batch, k, d]).",
    difficulty=2, minutes=15,
    mistakes=[
        M(*UNNORMALISED, _project_unnormalised),
        M("projecting on each direction separately",
          "projecting on each direction separately: summing the projections on the k directions one by one "
          "is right only if they are orthogonal. Project on their span: orthonormalise them first (QR or "
          "Gram-Schmidt), or use D^T (D D^T)^-1 D.", _project_each_direction),
    ],
))

register_exercise(Exercise(
    lesson=LESSON, name="fraction_explained", optional=True, points=1, reference=_fraction, output="float",
    cases=_cases(lambda s: (s["vectors"], s["dirs"])),
    summary="Mean over the batch of |v_par|^2 / |v|^2 (the mean of cos^2 for one direction).",
    difficulty=1, minutes=10,
    mistakes=[
        M("(mean |cos|)^2 for the fraction",
          "(mean |cos|)^2 for the fraction: the square of the mean |cos| is smaller than the mean of cos^2 "
          "unless every |cos| is the same. The fraction of squared norm explained is the mean of "
          "|v_par|^2 / |v|^2.", _fraction_mean_abs_cos_squared),
        M(*UNNORMALISED, _fraction_unnormalised),
    ],
))

_MAP_MISTAKES = [
    M("forgetting the bias term",
      "forgetting the bias term: with one side frozen the score is affine, x . map + bias, and the bias is "
      "(frozen vector) . b / sqrt(d_head).", _map_no_bias),
    M("ignoring the frozen LayerNorm scale",
      "ignoring the frozen LayerNorm scale: the residual stream is divided by its LayerNorm scale before "
      "W_Q / W_K, so the map on the raw residual must be divided by `scale`.", _map_no_scale),
    M("forgetting LayerNorm's centring",
      "forgetting LayerNorm's centring: LN subtracts the mean over d_model first; on the map this means "
      "subtracting the mean of W k (or W q) over d_model.", _map_no_centring),
    M("forgetting 1/sqrt(d_head)",
      "forgetting 1/sqrt(d_head): the score is q . k / sqrt(d_head).", _map_no_sqrt),
]

register_exercise(Exercise(
    lesson=LESSON, name="score_linear_in_keys", points=2, reference=ref.score_linear_in_keys, output="tuple",
    cases=_cases(lambda s: (s["q"], s["W_K"], s["b_K"], s["scale"])),
    summary="With q and the key-side LN scale frozen: (map [batch, d_model], bias [batch]), score = x . map + bias.",
    difficulty=2, minutes=15, mistakes=list(_MAP_MISTAKES),
))

register_exercise(Exercise(
    lesson=LESSON, name="score_linear_in_queries", optional=True, points=1, reference=ref.score_linear_in_queries,
    output="tuple", cases=_cases(lambda s: (s["k"], s["W_Q"], s["b_Q"], s["scale_q"])),
    summary="With k and the query-side LN scale frozen: (map, bias) with score = x_END . map + bias.",
    difficulty=1, minutes=5, mistakes=list(_MAP_MISTAKES),
))


def _terms_keys(case: Case) -> dict[str, torch.Tensor]:
    full = ref.decompose_keys(*case.args)
    only_bias = torch.zeros_like(full)
    only_bias[:, -1] = full[:, -1]
    return {"bias term": only_bias}


register_exercise(Exercise(
    lesson=LESSON, name="decompose_keys", points=2, reference=ref.decompose_keys,
    cases=_cases(lambda s: (s["q"], s["comps"], s["scale"], s["W_K"], s["b_K"])),
    summary="Score split by key-side component: [batch, n+1], bias term last; rows sum to the score.",
    difficulty=2, minutes=20, terms=_terms_keys,
    mistakes=[M(*RECOMPUTED_LN, _decompose_recomputed_ln), M(*NO_BIAS, _decompose_no_bias)],
))

register_exercise(Exercise(
    lesson=LESSON, name="decompose_queries", optional=True, points=2, reference=ref.decompose_queries,
    cases=_cases(lambda s: (s["k"], s["xq_comps"], s["scale_q"], s["W_Q"], s["b_Q"])),
    summary="Score split by query-side component: [batch, n+1], bias term k . b_Q last.",
    difficulty=2, minutes=10,
    mistakes=[M(*RECOMPUTED_LN, _decompose_recomputed_ln), M(*NO_BIAS, _decompose_no_bias)],
))

register_exercise(Exercise(
    lesson=LESSON, name="decompose_keys_minus_baseline", points=2, reference=ref.decompose_keys_minus_baseline,
    cases=_cases(lambda s: (s["q"], s["comps"], s["scale"], s["base"], s["scale_base"], s["W_K"], s["b_K"])),
    summary="score(END->IO) - score(END->S1) by key component: [batch, n+1]; the bias column is 0.",
    difficulty=2, minutes=15,
    mistakes=[
        M("keeping q . b_K after subtracting the baseline",
          "keeping q . b_K after subtracting the baseline: the key bias is the same at IO and S1, so q . b_K "
          "is in both scores and cancels; the bias column of the difference is 0.", _keys_base_keeps_bias),
        M("one LayerNorm scale for both positions",
          "one LayerNorm scale for both positions: the baseline's components must be divided by the "
          "baseline position's own scale (`scale_base`). This is why biases and equal vectors do not "
          "cancel between IO and S1.", _keys_base_one_scale),
        M(*RECOMPUTED_LN, _keys_base_recomputed_ln),
    ],
))

register_exercise(Exercise(
    lesson=LESSON, name="decompose_queries_minus_baseline", optional=True, points=2,
    reference=ref.decompose_queries_minus_baseline,
    cases=_cases(lambda s: (s["k"], s["k_base"], s["xq_comps"], s["scale_q"], s["W_Q"], s["b_Q"])),
    summary="The same difference split by query component: key k - k_base frozen; the b_Q term stays.",
    difficulty=2, minutes=10,
    mistakes=[
        M("subtracting the baseline on the bias",
          "subtracting the baseline on the bias: the baseline removes b_K (key side) but not b_Q. With the "
          "key frozen at k_IO - k_S1 the bias term is (k_IO - k_S1) . b_Q / sqrt(d_head), which is not 0.",
          _queries_base_drops_bias),
        M(*RECOMPUTED_LN, _queries_base_recomputed_ln),
    ],
))

register_exercise(Exercise(
    lesson=LESSON, name="four_terms", points=3, reference=ref.four_terms,
    cases=_cases(_four_args),
    summary="(q_par + q_perp) . (k_par + k_perp): the four terms [batch, 4]; biases go with the perpendicular parts.",
    difficulty=3, minutes=25,
    mistakes=[
        M("bias in the parallel part",
          "bias in the parallel part: b_Q and b_K belong to the perpendicular parts, so that q_par is only "
          "the residual stream along u and k_par only the residual stream along m.", _four_bias_parallel),
        M(*UNNORMALISED, _four_unnormalised),
        M(*RECOMPUTED_LN, _four_recomputed_ln),
    ],
))

register_exercise(Exercise(
    lesson=LESSON, name="share_explained", optional=True, points=1, reference=ref.share_explained,
    cases=_cases(_share_args),
    summary="Share of the net (IO - S1) score difference carried by each of the four terms: [4].",
    difficulty=1, minutes=10,
    mistakes=[
        M("mean of per-prompt shares",
          "mean of per-prompt shares: a prompt whose net difference is near 0 makes its share explode. "
          "Divide the mean of each term's difference by the mean of the total difference.",
          _share_mean_of_ratios),
        M("not subtracting the baseline",
          "not subtracting the baseline: the share is of the NET difference, term(IO) - term(S1), not of "
          "the score to IO alone.", _share_no_baseline),
    ],
))


def exercise_names() -> list[str]:
    return ["project", "fraction_explained", "score_linear_in_keys", "score_linear_in_queries",
            "decompose_keys", "decompose_queries", "decompose_keys_minus_baseline",
            "decompose_queries_minus_baseline", "four_terms", "share_explained",
            "logit_diff", "ablate_head", "patch_head_output", "parallel_share_null"]


# --------------------------------------------------------------------------- causal exercises
from mechinterp_edu.lessons.ioi_scores.causal_grading import CAUSAL_EXERCISES  # noqa: E402
from mechinterp_edu.lessons.ioi_scores.null_grading import NULL_EXERCISES  # noqa: E402

EXERCISES.extend(CAUSAL_EXERCISES + NULL_EXERCISES)
