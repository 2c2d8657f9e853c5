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

Everything here is vectorised: one einsum over components x prompts. Inputs may live on any
device (the course device by default) and be float32 or float64; decompositions on cached
activations are computed in float64 so they match the real score to ~1e-12 relative.
:func:`bench` times the vectorised decomposition against a per-component loop.
"""
from __future__ import annotations

import math
from dataclasses import dataclass, field
from typing import Optional, Sequence

import torch

TERM_NAMES: tuple[str, ...] = ("q∥ · k∥", "q∥ · k⊥", "q⊥ · k∥", "q⊥ · k⊥")


class ScoreInputError(ValueError):
    """Bad shapes or arguments; the message says which argument and what was expected."""


def _need(name: str, tensor, ndim: int, hint: str) -> None:
    if not isinstance(tensor, torch.Tensor):
        raise ScoreInputError(f"{name} must be a torch.Tensor {hint}, got {type(tensor).__name__}.")
    if tensor.ndim != ndim:
        raise ScoreInputError(f"{name} must be {ndim}-D {hint}, got shape {tuple(tensor.shape)}.")


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


def project_components(components: torch.Tensor, directions: torch.Tensor) -> torch.Tensor:
    """Parallel parts of many components at once: [batch, n, d] onto span of [batch, k, d]."""
    if directions.ndim == 2:  # one direction: no QR needed
        unit = directions / directions.norm(dim=-1, keepdim=True)
        return torch.einsum("bn,bd->bnd", torch.einsum("bnd,bd->bn", components, unit), unit)
    basis = _orthonormal_basis(directions)
    return torch.einsum("bdk,bnk->bnd", basis, torch.einsum("bdk,bnd->bnk", basis, components))


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


# --------------------------------------------------------------------------- model plumbing
@dataclass
class HeadScoreInputs:
    """Everything the decompositions of one head need, gathered from one forward pass (float64).

    Components are at three positions: END (query), the target key (IO by default) and the
    baseline key (S1). ``labels``/``kinds`` name the n components; decompositions append the
    bias term as column n.
    """

    layer: int
    head: int
    labels: list[str]
    kinds: list[str]                      # "head" | "mlp" | "embed" | "pos" | "bias"
    q_components: torch.Tensor            # [b, n, d_model] at END
    k_components: torch.Tensor            # [b, n, d_model] at the target
    base_components: torch.Tensor         # [b, n, d_model] at the baseline
    scale_q: torch.Tensor                 # [b]
    scale_k: torch.Tensor
    scale_base: torch.Tensor
    W_Q: torch.Tensor                     # [d_model, d_head]
    b_Q: torch.Tensor                     # [d_head]
    W_K: torch.Tensor
    b_K: torch.Tensor
    q: torch.Tensor                       # [b, d_head] from hook_q at END
    k: torch.Tensor                       # [b, d_head] from hook_k at the target
    k_base: torch.Tensor                  # [b, d_head] from hook_k at the baseline
    keys_all: torch.Tensor                # [b, seq, d_head] hook_k at every position
    key_mask: torch.Tensor                # [b, seq] True where END may attend
    target_pos: torch.Tensor              # [b]
    base_pos: torch.Tensor
    u: torch.Tensor                       # [b, d_model] W_U[:, IO]
    u_s: torch.Tensor                     # [b, d_model] W_U[:, S]
    m_k: torch.Tensor                     # [b, d_model] MLP0 output at the target
    m_base: torch.Tensor                  # [b, d_model] MLP0 output at the baseline
    extras: dict = field(default_factory=dict)

    @property
    def d_head(self) -> int:
        return self.W_Q.shape[1]

    @property
    def n(self) -> int:
        return len(self.labels)

    def real_score(self) -> torch.Tensor:
        """The model's own score END -> target, from hook_q and hook_k: [b]."""
        return (self.q * self.k).sum(-1) / math.sqrt(self.d_head)

    def real_score_base(self) -> torch.Tensor:
        return (self.q * self.k_base).sum(-1) / math.sqrt(self.d_head)


def component_labels(n_layers_before: int, n_heads: int) -> tuple[list[str], list[str]]:
    labels, kinds = [], []
    for layer in range(n_layers_before):
        for head in range(n_heads):
            labels.append(f"{layer}.{head}")
            kinds.append("head")
    for layer in range(n_layers_before):
        labels.append(f"MLP{layer}")
        kinds.append("mlp")
    labels += ["embed", "pos_embed", "b_O (all layers)"]
    kinds += ["embed", "pos", "bias"]
    return labels, kinds


def residual_components(model, cache, layer: int, positions: torch.Tensor,
                        dtype: torch.dtype = torch.float64) -> torch.Tensor:
    """The pieces of ``blocks.{layer}.hook_resid_pre`` at one position per prompt: [b, n, d_model].

    Order: heads (layer-major), MLPs, token embedding, positional embedding, summed b_O.
    They add up to the residual stream (tests check it against the cache).
    """
    rows = torch.arange(positions.shape[0], device=positions.device)
    parts = []
    W_O = model.W_O.detach().to(dtype)
    for l in range(layer):
        z = cache[f"blocks.{l}.attn.hook_z"][rows, positions].to(dtype)          # [b, h, e]
        parts.append(torch.einsum("bhe,hed->bhd", z, W_O[l]))
    for l in range(layer):
        parts.append(cache[f"blocks.{l}.hook_mlp_out"][rows, positions].to(dtype)[:, None])
    parts.append(cache["hook_embed"][rows, positions].to(dtype)[:, None])
    parts.append(cache["hook_pos_embed"][rows, positions].to(dtype)[:, None])
    b_O = model.b_O.detach().to(dtype)[:layer].sum(0) if layer > 0 else torch.zeros_like(parts[-1][0, 0])
    parts.append(b_O.expand(positions.shape[0], 1, -1))
    return torch.cat(parts, dim=1)


def run_with_cache(model, tokens: torch.Tensor):
    """One forward pass with the cache the lesson needs (no gradients)."""
    device = next(model.parameters()).device
    with torch.no_grad():
        _, cache = model.run_with_cache(tokens.to(device))
    return cache


def gather_head_inputs(model, batch, layer: int, head: int, target: str = "IO", baseline: str = "S1",
                       cache=None, dtype: torch.dtype = torch.float64) -> HeadScoreInputs:
    """Collect a head's decomposition inputs for a batch of IOI prompts (``ioi_data.IOIBatch``)."""
    n_layers, n_heads = model.cfg.n_layers, model.cfg.n_heads
    if not 0 <= layer < n_layers:
        raise ScoreInputError(f"layer must be in 0..{n_layers - 1} for this model, got {layer}.")
    if not 0 <= head < n_heads:
        raise ScoreInputError(f"head must be in 0..{n_heads - 1} for this model, got {head}.")
    for name in (target, baseline):
        if name not in batch.positions:
            raise ScoreInputError(f"{name!r} is not a prompt position; use one of {sorted(batch.positions)}.")
    if cache is None:
        cache = run_with_cache(model, batch.tokens)
    device = cache["hook_embed"].device
    pos = {k: v.to(device) for k, v in batch.positions.items()}
    rows = torch.arange(len(batch), device=device)
    end, tgt, base = pos["END"], pos[target], pos[baseline]
    labels, kinds = component_labels(layer, n_heads)

    def comps(p):
        return residual_components(model, cache, layer, p, dtype)

    scale = cache[f"blocks.{layer}.ln1.hook_scale"].to(dtype)[..., 0]            # [b, seq]
    q_all = cache[f"blocks.{layer}.attn.hook_q"][:, :, head].to(dtype)           # [b, seq, e]
    k_all = cache[f"blocks.{layer}.attn.hook_k"][:, :, head].to(dtype)
    seq = k_all.shape[1]
    key_mask = torch.arange(seq, device=device)[None, :] <= end[:, None]
    W_U = model.W_U.detach().to(dtype)
    io_tok, s_tok = batch.io_tokens.to(device), batch.s_tokens.to(device)
    mlp0 = cache["blocks.0.hook_mlp_out"].to(dtype)
    return HeadScoreInputs(
        layer=layer, head=head, labels=labels, kinds=kinds,
        q_components=comps(end), k_components=comps(tgt), base_components=comps(base),
        scale_q=scale[rows, end], scale_k=scale[rows, tgt], scale_base=scale[rows, base],
        W_Q=model.W_Q.detach().to(dtype)[layer, head], b_Q=model.b_Q.detach().to(dtype)[layer, head],
        W_K=model.W_K.detach().to(dtype)[layer, head], b_K=model.b_K.detach().to(dtype)[layer, head],
        q=q_all[rows, end], k=k_all[rows, tgt], k_base=k_all[rows, base],
        keys_all=k_all, key_mask=key_mask, target_pos=tgt, base_pos=base,
        u=W_U[:, io_tok].T, u_s=W_U[:, s_tok].T,
        m_k=mlp0[rows, tgt], m_base=mlp0[rows, base],
        extras={"target": target, "baseline": baseline, "eps": float(model.cfg.eps),
                "resid_end": cache[f"blocks.{layer}.hook_resid_pre"][rows, end].to(dtype),
                "resid_k": cache[f"blocks.{layer}.hook_resid_pre"][rows, tgt].to(dtype),
                "embed_k": model.W_E.detach().to(dtype)[batch.tokens.to(device)[rows, tgt]],
                "pos_k": model.W_pos.detach().to(dtype)[tgt]},
    )


# --------------------------------------------------------------------------- the full decomposition
def _ln_parts(components, scale, W, bias=None):
    """LN*(components) W for each component: [b, n(+1), e]; with ``bias`` appended as a last row."""
    parts = torch.einsum("bnd,de->bne", _frozen_ln(components, scale), W)
    if bias is not None:
        parts = torch.cat([parts, bias.expand(parts.shape[0], 1, -1)], dim=1)
    return parts


def _split(components, directions):
    par = project_components(components, directions)
    return par, components - par


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


def substituted_query(inp: HeadScoreInputs, vector: torch.Tensor) -> torch.Tensor:
    """The query if ``vector`` [b, d_model] were the whole residual stream at END: LN(vector) W_Q + b_Q.

    Here LayerNorm is computed on ``vector`` itself (it replaces the entire input), which fixes
    its scale: only its direction matters.
    """
    centred = vector - vector.mean(-1, keepdim=True)
    ln = centred / centred.pow(2).mean(-1, keepdim=True).add(model_eps(inp)).sqrt()
    return ln @ inp.W_Q + inp.b_Q


def substituted_key(inp: HeadScoreInputs, vector: torch.Tensor) -> torch.Tensor:
    centred = vector - vector.mean(-1, keepdim=True)
    ln = centred / centred.pow(2).mean(-1, keepdim=True).add(model_eps(inp)).sqrt()
    return ln @ inp.W_K + inp.b_K


def model_eps(inp: HeadScoreInputs) -> float:
    return float(inp.extras.get("eps", 1e-5))


def _q_parts_split(inp: HeadScoreInputs):
    """Per-query-component ∥/⊥ (to W_U[IO]) parts through W_Q: two [b, n+1, e]; b_Q sits in ⊥."""
    par, perp = _split(inp.q_components, inp.u)
    zero = torch.zeros_like(inp.b_Q)
    return _ln_parts(par, inp.scale_q, inp.W_Q, zero), _ln_parts(perp, inp.scale_q, inp.W_Q, inp.b_Q)


def _k_parts_split(inp: HeadScoreInputs, baseline: bool):
    """Per-key-component ∥/⊥ (to MLP0 at the key's own position) parts through W_K: [b, n+1, e]."""
    zero = torch.zeros_like(inp.b_K)
    par, perp = _split(inp.k_components, inp.m_k)
    k_par = _ln_parts(par, inp.scale_k, inp.W_K, zero)
    k_perp = _ln_parts(perp, inp.scale_k, inp.W_K, inp.b_K)
    if baseline:
        bpar, bperp = _split(inp.base_components, inp.m_base)
        k_par = k_par - _ln_parts(bpar, inp.scale_base, inp.W_K, zero)
        k_perp = k_perp - _ln_parts(bperp, inp.scale_base, inp.W_K, inp.b_K)
    return k_par, k_perp


def four_terms_by_key_component(inp: HeadScoreInputs, baseline: bool = True) -> torch.Tensor:
    """[b, 4, n+1]: for each key component (bias b_K last), the four terms with the full query."""
    q_par, q_perp = (p.sum(1) for p in _q_parts_split(inp))
    k_par, k_perp = _k_parts_split(inp, baseline)
    qs = torch.stack([q_par, q_par, q_perp, q_perp], 1)          # [b, 4, e]
    ks = torch.stack([k_par, k_perp, k_par, k_perp], 1)          # [b, 4, n+1, e]
    return torch.einsum("bte,btne->btn", qs, ks) / math.sqrt(inp.d_head)


def four_terms_by_query_component(inp: HeadScoreInputs, baseline: bool = True) -> torch.Tensor:
    """[b, 4, n+1]: for each query component (bias b_Q last), the four terms with the full key."""
    q_par, q_perp = _q_parts_split(inp)
    k_par, k_perp = (p.sum(1) for p in _k_parts_split(inp, baseline))
    qs = torch.stack([q_par, q_par, q_perp, q_perp], 1)          # [b, 4, n+1, e]
    ks = torch.stack([k_par, k_perp, k_par, k_perp], 1)          # [b, 4, e]
    return torch.einsum("btne,bte->btn", qs, ks) / math.sqrt(inp.d_head)


def score_grid(inp: HeadScoreInputs, baseline: bool = True) -> torch.Tensor:
    """[b, n+1 (query components, b_Q last), n+1 (key components, b_K last)]; sums to the score."""
    qs = _ln_parts(inp.q_components, inp.scale_q, inp.W_Q, inp.b_Q)
    ks = _ln_parts(inp.k_components, inp.scale_k, inp.W_K, inp.b_K)
    if baseline:
        ks = ks - _ln_parts(inp.base_components, inp.scale_base, inp.W_K, inp.b_K)
    return torch.einsum("bie,bje->bij", qs, ks) / math.sqrt(inp.d_head)


def decompose_all(inp: HeadScoreInputs) -> dict[str, torch.Tensor]:
    """Every decomposition of the lesson for one head, vectorised over components x prompts.

    Keys: ``keys_raw``/``keys_base`` [b, n+1], ``queries_*`` [b, n+1], ``four_keys_*`` and
    ``four_queries_*`` [b, 4, n+1], ``grid_*`` [b, n+1, n+1] (``base``: minus the baseline key).
    Shared pieces are computed once: each component's image under LN* and W_Q / W_K, and its
    ∥ part; the ⊥ part is the difference (LN* and W are linear, so no second projection).
    """
    sq = math.sqrt(inp.d_head)
    zq, zk = torch.zeros_like(inp.b_Q), torch.zeros_like(inp.b_K)
    q_parts = _ln_parts(inp.q_components, inp.scale_q, inp.W_Q, inp.b_Q)          # [b, n+1, e]
    k_parts = _ln_parts(inp.k_components, inp.scale_k, inp.W_K, inp.b_K)
    b_parts = _ln_parts(inp.base_components, inp.scale_base, inp.W_K, inp.b_K)
    q_par = _ln_parts(project_components(inp.q_components, inp.u), inp.scale_q, inp.W_Q, zq)
    k_par = _ln_parts(project_components(inp.k_components, inp.m_k), inp.scale_k, inp.W_K, zk)
    b_par = _ln_parts(project_components(inp.base_components, inp.m_base), inp.scale_base, inp.W_K, zk)
    q_perp, k_perp, b_perp = q_parts - q_par, k_parts - k_par, b_parts - b_par
    out: dict[str, torch.Tensor] = {}
    for tag, keys, kpar, kperp, k_frozen in (
            ("raw", k_parts, k_par, k_perp, inp.k),
            ("base", k_parts - b_parts, k_par - b_par, k_perp - b_perp, inp.k - inp.k_base)):
        out[f"keys_{tag}"] = torch.einsum("be,bne->bn", inp.q, keys) / sq
        out[f"queries_{tag}"] = torch.einsum("bne,be->bn", q_parts, k_frozen) / sq
        out[f"grid_{tag}"] = torch.einsum("bie,bje->bij", q_parts, keys) / sq
        q_halves = torch.stack([q_par.sum(1), q_perp.sum(1)], 1)                    # [b, 2, e]
        k_halves = torch.stack([kpar, kperp], 1)                                    # [b, 2, n+1, e]
        out[f"four_keys_{tag}"] = (torch.einsum("bie,bjne->bijn", q_halves, k_halves) / sq).flatten(1, 2)
        q_halves_n = torch.stack([q_par, q_perp], 1)                                # [b, 2, n+1, e]
        k_halves_t = torch.stack([kpar.sum(1), kperp.sum(1)], 1)                    # [b, 2, e]
        out[f"four_queries_{tag}"] = (torch.einsum("bine,bje->bijn", q_halves_n, k_halves_t) / sq).flatten(1, 2)
    return out


def decompose_all_loop(inp: HeadScoreInputs) -> dict[str, torch.Tensor]:
    """The same numbers as :func:`decompose_all`, one component at a time (the slow baseline)."""
    sq = math.sqrt(inp.d_head)
    b = inp.q.shape[0]

    def ln(c, s):
        return (c - c.mean(-1, keepdim=True)) / s[:, None]

    def proj(c, d):
        dn = d / d.norm(dim=-1, keepdim=True)
        return (c * dn).sum(-1, keepdim=True) * dn

    n = inp.n
    kq = [ln(inp.q_components[:, i], inp.scale_q) @ inp.W_Q for i in range(n)] + [inp.b_Q.expand(b, -1)]
    kk = [ln(inp.k_components[:, i], inp.scale_k) @ inp.W_K for i in range(n)] + [inp.b_K.expand(b, -1)]
    kb = [ln(inp.base_components[:, i], inp.scale_base) @ inp.W_K for i in range(n)] + [inp.b_K.expand(b, -1)]
    out: dict[str, torch.Tensor] = {}
    q_par_parts, q_perp_parts = [], []
    for i in range(n):
        c = inp.q_components[:, i]
        p = proj(c, inp.u)
        q_par_parts.append(ln(p, inp.scale_q) @ inp.W_Q)
        q_perp_parts.append(ln(c - p, inp.scale_q) @ inp.W_Q)
    q_par_parts.append(torch.zeros_like(kq[-1]))
    q_perp_parts.append(kq[-1])

    def k_split(comps, scale, m):
        par, perp = [], []
        for i in range(n):
            c = comps[:, i]
            p = proj(c, m)
            par.append(ln(p, scale) @ inp.W_K)
            perp.append(ln(c - p, scale) @ inp.W_K)
        par.append(torch.zeros_like(kk[-1]))
        perp.append(inp.b_K.expand(b, -1))
        return par, perp

    k_par_t, k_perp_t = k_split(inp.k_components, inp.scale_k, inp.m_k)
    k_par_b, k_perp_b = k_split(inp.base_components, inp.scale_base, inp.m_base)
    for base in (False, True):
        tag = "base" if base else "raw"
        keys = [kk[j] - kb[j] if base else kk[j] for j in range(n + 1)]
        k_total = inp.k - inp.k_base if base else inp.k      # the frozen key, as the fast path uses
        out[f"keys_{tag}"] = torch.stack([(inp.q * keys[j]).sum(-1) / sq for j in range(n + 1)], 1)
        out[f"queries_{tag}"] = torch.stack([(kq[i] * k_total).sum(-1) / sq for i in range(n + 1)], 1)
        grid = torch.zeros(b, n + 1, n + 1, dtype=inp.q.dtype, device=inp.q.device)
        for i in range(n + 1):
            for j in range(n + 1):
                grid[:, i, j] = (kq[i] * keys[j]).sum(-1) / sq
        out[f"grid_{tag}"] = grid
        kp = [k_par_t[j] - k_par_b[j] if base else k_par_t[j] for j in range(n + 1)]
        kpp = [k_perp_t[j] - k_perp_b[j] if base else k_perp_t[j] for j in range(n + 1)]
        qp, qpp = sum(q_par_parts), sum(q_perp_parts)
        four_k = torch.zeros(b, 4, n + 1, dtype=inp.q.dtype, device=inp.q.device)
        four_q = torch.zeros_like(four_k)
        kp_tot, kpp_tot = sum(kp), sum(kpp)
        for j in range(n + 1):
            for t, (qv, kv) in enumerate(((qp, kp[j]), (qp, kpp[j]), (qpp, kp[j]), (qpp, kpp[j]))):
                four_k[:, t, j] = (qv * kv).sum(-1) / sq
            for t, (qv, kv) in enumerate(((q_par_parts[j], kp_tot), (q_par_parts[j], kpp_tot),
                                          (q_perp_parts[j], kp_tot), (q_perp_parts[j], kpp_tot))):
                four_q[:, t, j] = (qv * kv).sum(-1) / sq
        out[f"four_keys_{tag}"] = four_k
        out[f"four_queries_{tag}"] = four_q
    return out


def expected_totals(inp: HeadScoreInputs) -> dict[str, torch.Tensor]:
    """What each decomposition must sum to: the real score (raw) or real score difference (base)."""
    raw = inp.real_score()
    base = raw - inp.real_score_base()
    return {"raw": raw, "base": base}


def max_sum_error(inp: HeadScoreInputs, parts: Optional[dict[str, torch.Tensor]] = None) -> float:
    """Largest |sum of a decomposition - the model's real score (from hook_q, hook_k)|."""
    parts = parts if parts is not None else decompose_all(inp)
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


# --------------------------------------------------------------------------- bench
def bench(quick: bool = False):
    """Vectorised decomposition vs a per-component loop, on the same inputs; and vs a forward pass."""
    from mechinterp_edu.bench import BenchRow, timed
    from mechinterp_edu.device import get_device
    from mechinterp_edu.reference.ioi_data import encode_prompts, sample_prompts, WordVocab, build_vocab

    device = get_device()
    sync = torch.cuda.synchronize if device.type == "cuda" else None
    rows = []
    setups = [("ioi_small", None)]
    if not quick:
        setups.append(("random GPT-2-small-shaped (12 layers, 12 heads, d_model 768)",
                       dict(n_layers=12, n_heads=12, d_model=768, d_vocab=len(build_vocab()), n_ctx=32)))
    for name, sizes in setups:
        if sizes is None:
            from mechinterp_edu.models.ioi import load
            model = load(device=device)
            layer, head = model.cfg.n_layers - 1, 0
        else:
            from mechinterp_edu.models.gpt2 import make_random_gpt2
            model = make_random_gpt2(seed=0, device=device, **sizes)
            layer, head = 10, 7
        n_prompts = 16 if quick else 64
        batch = encode_prompts(sample_prompts(n_prompts, "test", seed=0), WordVocab(build_vocab())).to(device)
        forward = timed(lambda: run_with_cache(model, batch.tokens), repeat=2 if quick else 3, sync=sync)
        cache = run_with_cache(model, batch.tokens)
        inp = gather_head_inputs(model, batch, layer, head, cache=cache)
        decompose_all(inp)  # warm-up (first-call dispatch overhead)
        fast = slow = float("inf")
        for _ in range(3):  # interleaved, best of 3: a busy machine slows both alike
            fast = min(fast, timed(lambda: decompose_all(inp), repeat=3, sync=sync))
            slow = min(slow, timed(lambda: decompose_all_loop(inp), repeat=1, sync=sync))
        a, b = decompose_all(inp), decompose_all_loop(inp)
        agree = max(float((a[k] - b[k]).abs().max()) for k in a)
        err = max_sum_error(inp, a)
        rows.append(BenchRow(
            f"{name}: all decompositions of head {layer}.{head}, {n_prompts} prompts x {inp.n + 1} components",
            fast, "per-component loop", slow,
            note=(f"{fast / forward:.3f}x the time of one forward pass with cache ({forward:.3f} s); "
                  f"loop and vectorised agree to {agree:.1e}; max |sum - real score| {err:.1e}")))
    return rows
