"""Lesson 5 reference: decomposing one head's END -> IO attention score, batched.

Notation (row vectors, TransformerLens shapes, one head of layer ``L``)::

    x            the residual stream entering layer L (``blocks.L.hook_resid_pre``)   [d_model]
    s            its LayerNorm scale, read from the cache (``blocks.L.ln1.hook_scale``)
    LN*(x)       = (x - mean(x)) / s    with s FROZEN: a linear map of x
    q            = LN*(x_END) W_Q + b_Q                                               [d_head]
    k            = LN*(x_IO)  W_K + b_K
    score        = q . k / sqrt(d_head)                  (the model's real pre-softmax score)

The model in compatibility mode has LayerNorm folded into W_Q, W_K (``ln1`` only centres and
divides by s), so the formula above reproduces ``hook_q`` / ``hook_k`` exactly.

The residual stream is a sum of components: every earlier head's output (``hook_z @ W_O``),
every earlier MLP's output, the token embedding, the positional embedding, and the summed
attention-output biases ``b_O``. With s frozen, ``LN*`` is linear, so the score splits
exactly into one term per component plus a bias term (``q . b_K`` on the key side,
``k . b_Q`` on the query side). Recomputing LayerNorm for each component instead (its own
mean and scale) is not linear and the terms no longer add up to the score.

Baseline: ``score(END -> IO) - score(END -> S1)`` on the key side cancels ``q . b_K`` exactly;
nothing else cancels (positions differ, and every component, biases included, is divided by a
different scale at IO and at S1). On the query side the bias term becomes
``(k_IO - k_S1) . b_Q``, which does not cancel either.

The decompositions are vectorised (one batched product over components x prompts); the
per-component loop they are timed against lives in ``bench.py``. Inputs may live on any
device (the course device by default) and be float32 or float64; decompositions on cached
activations are computed in float64, so they add up to the real score to ~1e-13 on a float64
model and to the model's own float32 rounding (~1e-5 on scores of ~100) on a float32 one.
The inputs of one head (:class:`HeadScoreInputs`) are gathered in ``inputs.py``.
"""
from __future__ import annotations

import math
from typing import Optional

import torch

from mechinterp_edu.lessons.ioi_scores.inputs import (  # noqa: F401 - part of this module's API
    HeadScoreInputs,
    ScoreInputError,
    _need,
    component_labels,
    gather_head_inputs,
    residual_components,
    run_with_cache,
)

TERM_NAMES: tuple[str, ...] = ("q∥ · k∥", "q∥ · k⊥", "q⊥ · k∥", "q⊥ · k⊥")


# --------------------------------------------------------------------------- projections
def _orthonormal_basis(directions: torch.Tensor) -> torch.Tensor:
    """[batch, k, d] (linearly independent rows) -> orthonormal basis [batch, d, k] of their span."""
    basis, _ = torch.linalg.qr(directions.transpose(-1, -2), mode="reduced")
    return basis


def project(vectors: torch.Tensor, directions: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
    """Split ``vectors`` [batch, d] into parts parallel and perpendicular to span(directions).

    ``directions``: [batch, k, d] (k >= 1, linearly independent, any norms) or [batch, d] (k = 1).
    Returns ``(parallel, perpendicular)``, each [batch, d], with parallel + perpendicular = vectors.
    """
    if directions.ndim == 2:
        directions = directions[:, None, :]
    _need("vectors", vectors, 2, "[batch, d]")
    _need("directions", directions, 3, "[batch, k, d]")
    if directions.shape[0] != vectors.shape[0] or directions.shape[-1] != vectors.shape[-1]:
        raise ScoreInputError(f"directions {tuple(directions.shape)} must be [batch, k, d] matching "
                              f"vectors {tuple(vectors.shape)}.")
    basis = _orthonormal_basis(directions)                      # [b, d, k]
    coords = torch.einsum("bdk,bd->bk", basis, vectors)
    parallel = torch.einsum("bdk,bk->bd", basis, coords)
    return parallel, vectors - parallel


def fraction_explained(vectors: torch.Tensor, directions: torch.Tensor) -> torch.Tensor:
    """Mean over the batch of |parallel|^2 / |vector|^2 (for k = 1: the mean of cos^2).

    Chance level for k random directions in d dimensions: k / d (see :func:`chance_level`).
    Returns a 0-d tensor.
    """
    parallel, _ = project(vectors, directions)
    return (parallel.pow(2).sum(-1) / vectors.pow(2).sum(-1)).mean()


def chance_level(d: int, k: int = 1) -> float:
    """Expected fraction of squared norm in k uniformly random directions of R^d: k/d."""
    return k / d


# --------------------------------------------------------------------------- linear maps
def _frozen_ln(x: torch.Tensor, scale: torch.Tensor) -> torch.Tensor:
    """(x - mean(x)) / scale along the last axis; ``scale`` broadcasts over the leading axes."""
    while scale.ndim < x.ndim:
        scale = scale.unsqueeze(-1)
    return (x - x.mean(-1, keepdim=True)) / scale


def _linear_map(other: torch.Tensor, W: torch.Tensor, b: torch.Tensor,
                scale: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
    _need("the frozen side (q or k)", other, 2, "[batch, d_head]")
    _need("W", W, 2, "[d_model, d_head]")
    _need("b", b, 1, "[d_head]")
    _need("scale", scale, 1, "[batch] (the LayerNorm scale, frozen from the cache)")
    d_head = W.shape[1]
    raw = torch.einsum("de,be->bd", W, other) / math.sqrt(d_head)
    # score = LN*(x) . raw = (x - mean(x)) . raw / s = x . (raw - mean(raw)) / s
    linear = (raw - raw.mean(-1, keepdim=True)) / scale[:, None]
    bias = torch.einsum("e,be->b", b, other) / math.sqrt(d_head)
    return linear, bias


def score_linear_in_keys(q: torch.Tensor, W_K: torch.Tensor, b_K: torch.Tensor,
                         scale: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
    """With q [batch, d_head] and the key-side LN scale [batch] frozen: score = x . map + bias.

    ``x`` is the raw key-side residual stream (or any sum of its components) [batch, d_model].
    Returns ``(map [batch, d_model], bias [batch])``.
    """
    return _linear_map(q, W_K, b_K, scale)


def score_linear_in_queries(k: torch.Tensor, W_Q: torch.Tensor, b_Q: torch.Tensor,
                            scale: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
    """With k [batch, d_head] and the query-side LN scale frozen: score = x_END . map + bias."""
    return _linear_map(k, W_Q, b_Q, scale)


# --------------------------------------------------------------------------- decompositions
def _decompose(other, components, scale, W, b) -> torch.Tensor:
    _need("components", components, 3, "[batch, n_components, d_model]")
    linear, bias = _linear_map(other, W, b, scale)
    contributions = torch.einsum("bnd,bd->bn", components, linear)   # components x prompts at once
    return torch.cat([contributions, bias[:, None]], dim=1)


def decompose_keys(q, components, scale, W_K, b_K) -> torch.Tensor:
    """Score split by key-side component: [batch, n+1]; the last column is q . b_K / sqrt(d_head).

    q [batch, d_head]; components [batch, n, d_model] summing to the key-side residual;
    scale [batch] (frozen LN scale at the key position). Row sums equal the real score.
    """
    return _decompose(q, components, scale, W_K, b_K)


def decompose_queries(k, components, scale, W_Q, b_Q) -> torch.Tensor:
    """Score split by query-side component: [batch, n+1]; the last column is k . b_Q / sqrt(d_head)."""
    return _decompose(k, components, scale, W_Q, b_Q)


def decompose_keys_minus_baseline(q, components, scale, components_base, scale_base,
                                  W_K, b_K) -> torch.Tensor:
    """score(END->target) - score(END->baseline) by key component: [batch, n+1] (bias column = 0).

    Each component enters as c_target / s_target - c_base / s_base (after centring): the two
    scales differ, so even identical vectors (the b_O biases) do not cancel; only q . b_K does.
    """
    target = decompose_keys(q, components, scale, W_K, b_K)
    base = decompose_keys(q, components_base, scale_base, W_K, b_K)
    return target - base


def decompose_queries_minus_baseline(k, k_base, components, scale, W_Q, b_Q) -> torch.Tensor:
    """The same difference split by query component: the frozen key becomes k - k_base, and the
    bias column (k - k_base) . b_Q / sqrt(d_head) does NOT vanish."""
    return decompose_queries(k - k_base, components, scale, W_Q, b_Q)


def four_terms(x_q, scale_q, u, x_k, scale_k, m, W_Q, b_Q, W_K, b_K) -> torch.Tensor:
    """The four-term split of one score: [batch, 4] in the order of ``TERM_NAMES``.

    Query side: x_q = x_q∥ + x_q⊥ with ∥ along u (e.g. W_U[IO]); q∥ = LN*(x_q∥) W_Q and
    q⊥ = LN*(x_q⊥) W_Q + b_Q (the bias goes with ⊥). Key side: x_k = x_k∥ + x_k⊥ along m (e.g. the
    MLP0 output at the key position), b_K goes with ⊥. The four terms sum to the score.
    """
    xq_par, xq_perp = project(x_q, u)
    xk_par, xk_perp = project(x_k, m)
    d_head = W_Q.shape[1]
    q_par = _frozen_ln(xq_par, scale_q) @ W_Q
    q_perp = _frozen_ln(xq_perp, scale_q) @ W_Q + b_Q
    k_par = _frozen_ln(xk_par, scale_k) @ W_K
    k_perp = _frozen_ln(xk_perp, scale_k) @ W_K + b_K
    qs = torch.stack([q_par, q_perp], 1)          # [b, 2, e]
    ks = torch.stack([k_par, k_perp], 1)
    grid = torch.einsum("bie,bje->bij", qs, ks) / math.sqrt(d_head)
    return grid.reshape(grid.shape[0], 4)


def share_explained(terms, terms_base) -> torch.Tensor:
    """Share of the net (target - baseline) score difference carried by each of the 4 terms: [4].

    mean_over_prompts(term_t - base_t) / mean_over_prompts(sum_t (term_t - base_t)): a ratio of
    means, so prompts whose net difference is near 0 cannot blow the share up.
    """
    diff = terms - terms_base
    return diff.mean(0) / diff.sum(-1).mean()


# --------------------------------------------------------------------------- the full decomposition
def key_side(inp: HeadScoreInputs, baseline: bool = False, q: Optional[torch.Tensor] = None) -> torch.Tensor:
    """Key-side decomposition [b, n+1] (q frozen; pass ``q`` to substitute another query)."""
    q = inp.q if q is None else q
    if baseline:
        return decompose_keys_minus_baseline(q, inp.k_components, inp.scale_k, inp.base_components,
                                             inp.scale_base, inp.W_K, inp.b_K)
    return decompose_keys(q, inp.k_components, inp.scale_k, inp.W_K, inp.b_K)


def query_side(inp: HeadScoreInputs, baseline: bool = False) -> torch.Tensor:
    """Query-side decomposition [b, n+1] (key frozen; with the baseline, k -> k - k_S1)."""
    if baseline:
        return decompose_queries_minus_baseline(inp.k, inp.k_base, inp.q_components, inp.scale_q,
                                                inp.W_Q, inp.b_Q)
    return decompose_queries(inp.k, inp.q_components, inp.scale_q, inp.W_Q, inp.b_Q)


def model_eps(inp: HeadScoreInputs) -> float:
    return float(inp.extras.get("eps", 1e-5))


def _own_ln(inp: HeadScoreInputs, vector: torch.Tensor) -> torch.Tensor:
    centred = vector - vector.mean(-1, keepdim=True)
    return centred / centred.pow(2).mean(-1, keepdim=True).add(model_eps(inp)).sqrt()


def substituted_query(inp: HeadScoreInputs, vector: torch.Tensor) -> torch.Tensor:
    """The query if ``vector`` [b, d_model] were the whole residual stream at END: LN(vector) W_Q + b_Q.

    Here LayerNorm is computed on ``vector`` itself (it replaces the entire input), which fixes
    its scale: only its direction matters.
    """
    return _own_ln(inp, vector) @ inp.W_Q + inp.b_Q


def substituted_key(inp: HeadScoreInputs, vector: torch.Tensor) -> torch.Tensor:
    """The key if ``vector`` were the whole residual stream at the target position."""
    return _own_ln(inp, vector) @ inp.W_K + inp.b_K


def _unit(v: torch.Tensor) -> torch.Tensor:
    return v / v.norm(dim=-1, keepdim=True)


def _centred_rows(W: torch.Tensor) -> torch.Tensor:
    """W [d_model, e] minus its mean row: x @ W_c = (x - mean(x)) @ W, so LN* needs no copy of x."""
    return W - W.mean(0, keepdim=True)


def _image(v: torch.Tensor, scale: torch.Tensor, W_c: torch.Tensor) -> torch.Tensor:
    """LN*(v) W for one vector per prompt: v [b, d_model] -> [b, e]."""
    return _component_images(v[:, None], scale, W_c)[:, 0]


def _pullback(frozen: torch.Tensor, scale: torch.Tensor, W_c: torch.Tensor, sq: float) -> torch.Tensor:
    """Frozen vectors f [b, F, e] as linear maps on d_model: W_c f / (s sqrt(d_head)), [b, F, d_model].

    c . map = LN*(c) W . f / sqrt(d_head) for any residual-stream vector c (scale s frozen)."""
    return torch.einsum("de,bfe->bfd", W_c, frozen) / (scale[:, None, None] * sq)


def _dots(components: torch.Tensor, rows: torch.Tensor) -> torch.Tensor:
    """Every component [b, n, d_model] against every row [b, F, d_model]: [b, F, n].

    The one pass over a component tensor: a batched matrix product over prompts."""
    return torch.einsum("bfd,bnd->bfn", rows, components)


def _rows(*entries: torch.Tensor) -> torch.Tensor:
    """Stack per-prompt coefficients [b] into one row [b, len(entries)]."""
    return torch.stack(entries, -1)


def decompose_all(inp: HeadScoreInputs) -> dict[str, torch.Tensor]:
    """The per-component decompositions of the lesson for one head, vectorised.

    Keys (``raw``: score END -> target; ``base``: minus the score END -> baseline):
    ``keys_*`` and ``queries_*`` [b, n+1] (bias term last), ``four_keys_*`` and
    ``four_queries_*`` [b, 4, n+1] (terms in the order of ``TERM_NAMES``).

    Nothing maps a component through W_Q or W_K one by one. With one side frozen the score is a
    linear function of the other side's residual stream (:func:`_pullback`), and a ∥ part
    (c . m) m has the image (c . m) LN*(m) W: a coefficient times one image per prompt. So every
    number here is a per-prompt linear combination of a few dot products per component, and
    each component tensor is read once (:func:`_dots`):

    - target keys c_j:   t_q = c_j . map(q),    t_u = c_j . map(img_u),   α_j = c_j . m̂_t
    - baseline keys:     the same with the baseline's scale and m̂_b
    - queries c_i:       c_i . map(k), map(k_S1), map(img_t), map(img_b),  β_i = c_i . û

    with img_u = LN*_END(û) W_Q, img_t = LN*_t(m̂_t) W_K, img_b = LN*_b(m̂_b) W_K. The whole
    query's ∥ part is q∥ = a_q img_u with a_q = Σ_i β_i (b_Q stays in q⊥), and likewise
    k∥ = a_t img_t. The coefficient rows below follow from expanding (q∥ + q⊥) . (k∥ + k⊥)
    (derivation ``ioi_scores.batched``). The full query x key grid needs every component's
    image and lives in :func:`score_grids`.
    """
    sq = math.sqrt(inp.d_head)
    WQ, WK = _centred_rows(inp.W_Q), _centred_rows(inp.W_K)

    def dot(x, y):
        return (x * y).sum(-1) / sq

    u, m_t, m_b = _unit(inp.u), _unit(inp.m_k), _unit(inp.m_base)
    img_u, img_t, img_b = (_image(u, inp.scale_q, WQ), _image(m_t, inp.scale_k, WK),
                           _image(m_b, inp.scale_base, WK))
    frozen_q = torch.stack([inp.q, img_u], 1)
    P_t = _dots(inp.k_components, torch.cat([_pullback(frozen_q, inp.scale_k, WK, sq), m_t[:, None]], 1))
    P_b = _dots(inp.base_components, torch.cat([_pullback(frozen_q, inp.scale_base, WK, sq), m_b[:, None]], 1))
    frozen_k = torch.stack([inp.k, inp.k_base, img_t, img_b], 1)
    P_q = _dots(inp.q_components, torch.cat([_pullback(frozen_k, inp.scale_q, WQ, sq), u[:, None]], 1))
    a_q, a_t, a_b = P_q[:, 4].sum(-1), P_t[:, 2].sum(-1), P_b[:, 2].sum(-1)
    zero = torch.zeros_like(a_q)
    one = zero + 1
    out: dict[str, torch.Tensor] = {}

    # Key side. Rows: total, then the four terms; columns: (t_q, t_u, α) of one key position.
    # q∥ . k_j∥ = a_q α_j g_u;  q⊥ . k_j∥ = α_j (g_q - a_q g_u);  q∥ . k_j = a_q t_u;  q . k_j = t_q
    # with g_u = img . img_u and g_q = img . q (img: the key position's ∥ image).
    def key_coefficients(img):
        par, g_q = a_q * dot(img, img_u), dot(img, inp.q)
        return torch.stack([_rows(one, zero, zero), _rows(zero, zero, par), _rows(zero, a_q, -par),
                            _rows(zero, zero, g_q - par), _rows(one, -a_q, par - g_q)], 1)   # [b, 5, 3]

    keys_t = torch.einsum("btf,bfn->btn", key_coefficients(img_t), P_t)
    keys_b = torch.einsum("btf,bfn->btn", key_coefficients(img_b), P_b)
    bk_q, bk_par = dot(inp.b_K, inp.q), a_q * dot(inp.b_K, img_u)      # b_K sits in k⊥
    bias_raw = torch.stack([bk_q, zero, bk_par, zero, bk_q - bk_par], 1)
    for tag, parts, bias in (("raw", keys_t, bias_raw), ("base", keys_t - keys_b, torch.zeros_like(bias_raw))):
        full = torch.cat([parts, bias[..., None]], 2)
        out[f"keys_{tag}"], out[f"four_keys_{tag}"] = full[:, 0], full[:, 1:]

    # Query side, frozen key k_f with k_f∥ = a_t img_t (minus a_b img_b with the baseline).
    # Columns: (c . map(k), c . map(k_S1), c . map(img_t), c . map(img_b), β).
    h_ut, h_ub, h_uk, h_ukb = dot(img_u, img_t), dot(img_u, img_b), dot(img_u, inp.k), dot(img_u, inp.k_base)
    for tag, w in (("raw", 0.0), ("base", 1.0)):                   # w: weight of the baseline key
        h_par = a_t * h_ut - w * a_b * h_ub                          # img_u . k_f∥
        h_f = h_uk - w * h_ukb                                       # img_u . k_f
        coefficients = torch.stack([_rows(one, -w * one, zero, zero, zero),
                                    _rows(zero, zero, zero, zero, h_par),
                                    _rows(zero, zero, zero, zero, h_f - h_par),
                                    _rows(zero, zero, a_t, -w * a_b, -h_par),
                                    _rows(one, -w * one, -a_t, w * a_b, h_par - h_f)], 1)  # [b, 5, 5]
        parts = torch.einsum("btf,bfn->btn", coefficients, P_q)
        k_f = inp.k - w * inp.k_base
        k_par = a_t[:, None] * img_t - w * a_b[:, None] * img_b
        bq_k, bq_par = dot(inp.b_Q, k_f), dot(inp.b_Q, k_par)       # b_Q sits in q⊥
        bias = torch.stack([bq_k, zero, zero, bq_par, bq_k - bq_par], 1)
        full = torch.cat([parts, bias[..., None]], 2)
        out[f"queries_{tag}"], out[f"four_queries_{tag}"] = full[:, 0], full[:, 1:]
    return out


def _component_images(components, scale, W_c):
    """LN*(c_j) W for every component: [b, n, e], one matrix product over components x prompts."""
    return torch.einsum("bnd,de->bne", components, W_c) / scale[:, None, None]


def score_grids(inp: HeadScoreInputs) -> dict[str, torch.Tensor]:
    """Both grids, ``grid_raw`` and ``grid_base``: [b, n+1 (query, b_Q last), n+1 (key, b_K last)].

    Every component goes through LN* and W_Q (or W_K) once, in one batched product per
    component tensor, and one more product per grid takes all pairwise dot products. The entries
    of each grid add up to the score (raw) or to the net score (base).
    """
    WQ, WK = _centred_rows(inp.W_Q), _centred_rows(inp.W_K)
    b = inp.q.shape[0]
    qs = torch.cat([_component_images(inp.q_components, inp.scale_q, WQ), inp.b_Q.expand(b, 1, -1)], 1)
    k_t = _component_images(inp.k_components, inp.scale_k, WK)
    k_b = _component_images(inp.base_components, inp.scale_base, WK)
    ks_raw = torch.cat([k_t, inp.b_K.expand(b, 1, -1)], 1)
    ks_base = torch.cat([k_t - k_b, torch.zeros_like(inp.b_K).expand(b, 1, -1)], 1)
    sq = math.sqrt(inp.d_head)
    return {"grid_raw": torch.einsum("bie,bje->bij", qs, ks_raw) / sq,
            "grid_base": torch.einsum("bie,bje->bij", qs, ks_base) / sq}


def score_grid(inp: HeadScoreInputs, baseline: bool = True) -> torch.Tensor:
    """One grid of :func:`score_grids`: [b, n+1, n+1], the net one (minus the baseline) by default."""
    return score_grids(inp)["grid_base" if baseline else "grid_raw"]


def expected_totals(inp: HeadScoreInputs) -> dict[str, torch.Tensor]:
    """What each decomposition must sum to: the real score (raw) or real score difference (base)."""
    raw = inp.real_score()
    return {"raw": raw, "base": raw - inp.real_score_base()}


def max_sum_error(inp: HeadScoreInputs, parts: Optional[dict[str, torch.Tensor]] = None) -> float:
    """Largest |sum of a decomposition - the model's real score (from hook_q, hook_k)|, over every
    decomposition of :func:`decompose_all` and both grids."""
    parts = dict(parts if parts is not None else decompose_all(inp))
    if "grid_raw" not in parts or "grid_base" not in parts:
        parts.update(score_grids(inp))
    totals = expected_totals(inp)
    worst = 0.0
    for key, value in parts.items():
        tag = key.rsplit("_", 1)[-1]
        summed = value.flatten(1).sum(-1)
        worst = max(worst, float((summed - totals[tag]).abs().max()))
    return worst


# --------------------------------------------------------------------------- histograms
def swap_histograms(inp: HeadScoreInputs, candidates: dict[str, torch.Tensor], side: str,
                    baseline: bool = False) -> dict[str, dict[str, torch.Tensor]]:
    """Scores and probabilities END -> target with one side frozen and the other replaced.

    ``side="query"``: keys frozen (every position, from hook_k); the END residual is replaced by
    each candidate [b, d_model] (LayerNorm recomputed on the candidate, as the whole input).
    ``side="key"``: the query frozen; the target's residual is replaced by each candidate.
    Returns {candidate: {"score": [b], "prob": [b]}}; with ``baseline`` the score is the
    target score minus the baseline score (probabilities are always at the target).
    """
    sq = math.sqrt(inp.d_head)
    rows = torch.arange(inp.q.shape[0], device=inp.q.device)
    out = {}
    for name, vec in candidates.items():
        if side == "query":
            q = substituted_query(inp, vec)
            keys = inp.keys_all
        elif side == "key":
            q = inp.q
            keys = inp.keys_all.clone()
            keys[rows, inp.target_pos] = substituted_key(inp, vec)
        else:
            raise ScoreInputError(f"side must be 'query' or 'key', not {side!r}.")
        scores = torch.einsum("be,bse->bs", q, keys) / sq
        probs = torch.softmax(scores.masked_fill(~inp.key_mask, float("-inf")), dim=-1)
        score = scores[rows, inp.target_pos]
        if baseline:
            score = score - scores[rows, inp.base_pos]
        out[name] = {"score": score, "prob": probs[rows, inp.target_pos]}
    return out


def default_candidates(inp: HeadScoreInputs, side: str, top: Optional[str] = None,
                       seed: int = 0) -> dict[str, torch.Tensor]:
    """The candidate vectors the lesson compares (each [b, d_model])."""
    gen = torch.Generator(device="cpu").manual_seed(seed)
    rand = torch.randn(inp.u.shape, generator=gen, dtype=inp.u.dtype).to(inp.u.device)
    if side == "query":
        cands = {"real residual (END)": inp.q_components.sum(1), "W_U[IO]": inp.u, "W_U[S]": inp.u_s}
        if top is not None and top in inp.labels:
            cands[f"head {top} output"] = inp.q_components[:, inp.labels.index(top)]
        cands["random direction"] = rand
        return cands
    cands = {"real residual (key)": inp.k_components.sum(1),
             "W_E[token]": inp.extras["embed_k"],
             "W_E[token] + W_pos": inp.extras["embed_k"] + inp.extras["pos_k"],
             "MLP0 output": inp.m_k,
             "W_E[token] + MLP0": inp.extras["embed_k"] + inp.m_k,
             "W_U[IO]": inp.u,
             "random direction": rand}
    return cands
