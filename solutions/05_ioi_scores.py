"""Lesson 5 worked solutions: decomposing an attention score (END -> IO) by component.

Written to be read step by step; the fast, batched versions live in
mechinterp_edu/reference/ioi_scores.py (a different implementation: the tests check that the
two agree, and that every decomposition adds up to the model's own score from hook_q, hook_k).

Sections 6-7 (causal evidence, the null) have their fast versions and a hook-based second
implementation in mechinterp_edu/lessons/ioi_scores/causal.py and nulls.py.

Conventions: row vectors, W_Q, W_K [d_model, d_head]; scale [batch] is the LayerNorm scale
frozen from the cache; LN*(x) = (x - mean(x)) / scale.
"""
import math

import torch


def _frozen_layernorm(x, scale):
    """LN*(x): centre over d_model, divide by the frozen scale. x [batch, d_model], scale [batch]."""
    centred = x - x.mean(dim=-1, keepdim=True)
    return centred / scale[:, None]


# --------------------------------------------------------------------------- 1. projections
def project(vectors, directions):
    # Step 1: accept a single direction [batch, d] as k = 1.
    if directions.ndim == 2:
        directions = directions[:, None, :]
    # Step 2: Gram-Schmidt: turn the k directions into an orthonormal basis of their span.
    basis = []
    for i in range(directions.shape[1]):
        w = directions[:, i, :].clone()
        for e in basis:
            w = w - (w * e).sum(-1, keepdim=True) * e
        basis.append(w / w.norm(dim=-1, keepdim=True))
    # Step 3: the parallel part is the sum of the components along each basis vector.
    parallel = torch.zeros_like(vectors)
    for e in basis:
        parallel = parallel + (vectors * e).sum(-1, keepdim=True) * e
    # Step 4: the perpendicular part is what is left.
    return parallel, vectors - parallel


def fraction_explained(vectors, directions) -> float:
    parallel, _ = project(vectors, directions)
    # Per vector: |v_par|^2 / |v|^2 (= cos^2 for one direction). Then the mean over the batch.
    per_vector = (parallel * parallel).sum(-1) / (vectors * vectors).sum(-1)
    return per_vector.mean().item()


# --------------------------------------------------------------------------- 2. linear maps
def _affine_map(frozen, W, b, scale):
    d_model, d_head = W.shape
    # score = (LN*(x) W + b) . f / sqrt(d_head)
    #       = LN*(x) . (W f) / sqrt(d_head)  +  b . f / sqrt(d_head)
    # LN*(x) = x C / s with the centring matrix C = I - 11^T/d (symmetric), so
    #       LN*(x) . r = x . (C r) / s.
    C = torch.eye(d_model, dtype=W.dtype, device=W.device) - 1.0 / d_model
    r = frozen @ W.T / math.sqrt(d_head)                       # [batch, d_model]: rows are (W f)^T
    linear_map = (r @ C) / scale[:, None]                      # C symmetric: r C = (C r^T)^T
    bias = (frozen * b).sum(-1) / math.sqrt(d_head)
    return linear_map, bias


def score_linear_in_keys(q, W_K, b_K, scale):
    return _affine_map(q, W_K, b_K, scale)


def score_linear_in_queries(k, W_Q, b_Q, scale):
    return _affine_map(k, W_Q, b_Q, scale)


# --------------------------------------------------------------------------- 3. decompositions
def _by_component(frozen, components, scale, W, b):
    d_head = W.shape[1]
    columns = []
    # One component at a time: its piece of the key (or query) is LN*(c) W, using the scale of
    # the WHOLE residual stream (frozen), never a LayerNorm recomputed on c alone.
    for j in range(components.shape[1]):
        piece = _frozen_layernorm(components[:, j, :], scale) @ W
        columns.append((piece * frozen).sum(-1) / math.sqrt(d_head))
    # The bias is a component of the key (or query) too.
    columns.append((frozen * b).sum(-1) / math.sqrt(d_head))
    return torch.stack(columns, dim=1)


def decompose_keys(q, components, scale, W_K, b_K):
    return _by_component(q, components, scale, W_K, b_K)


def decompose_queries(k, components, scale, W_Q, b_Q):
    return _by_component(k, components, scale, W_Q, b_Q)


# --------------------------------------------------------------------------- 4. the S1 baseline
def decompose_keys_minus_baseline(q, components, scale, components_base, scale_base, W_K, b_K):
    at_io = decompose_keys(q, components, scale, W_K, b_K)
    at_s1 = decompose_keys(q, components_base, scale_base, W_K, b_K)  # S1 uses ITS OWN scale
    # The bias columns are both q . b_K / sqrt(d_head): their difference is exactly 0.
    return at_io - at_s1


def decompose_queries_minus_baseline(k, k_base, components, scale, W_Q, b_Q):
    # score(IO) - score(S1) = q . (k - k_base) / sqrt(d_head): freeze the key difference.
    # The bias column (k - k_base) . b_Q / sqrt(d_head) does not cancel.
    return decompose_queries(k - k_base, components, scale, W_Q, b_Q)


# --------------------------------------------------------------------------- 5. four terms
def four_terms(x_q, scale_q, u, x_k, scale_k, m, W_Q, b_Q, W_K, b_K):
    d_head = W_Q.shape[1]
    # Step 1: split both residual streams.
    xq_par, xq_perp = project(x_q, u)
    xk_par, xk_perp = project(x_k, m)
    # Step 2: through LN* (frozen scales) and the weights; biases go with the perpendicular parts.
    q_par = _frozen_layernorm(xq_par, scale_q) @ W_Q
    q_perp = _frozen_layernorm(xq_perp, scale_q) @ W_Q + b_Q
    k_par = _frozen_layernorm(xk_par, scale_k) @ W_K
    k_perp = _frozen_layernorm(xk_perp, scale_k) @ W_K + b_K
    # Step 3: the four dot products, in the order par.par, par.perp, perp.par, perp.perp.
    terms = [(q_par, k_par), (q_par, k_perp), (q_perp, k_par), (q_perp, k_perp)]
    return torch.stack([(a * b).sum(-1) / math.sqrt(d_head) for a, b in terms], dim=1)


def share_explained(terms, terms_base):
    difference = terms - terms_base                     # [batch, 4]: each term's IO - S1 difference
    total = difference.sum(dim=1)                       # [batch]: the net score difference
    return difference.mean(dim=0) / total.mean()        # ratio of means, not mean of ratios


# --------------------------------------------------------------------------- 6. causal evidence
def run_model(weights, tokens, hook=None, eps=1e-5):
    """The model's forward pass (given in the exercise file). hook(name, layer, tensor) may replace
    "pattern" [batch, heads, query, key] or "z" [batch, seq, heads, d_head]. Returns (logits, zs)."""
    def layer_norm(x):
        # Recomputed on whatever stream arrives: after an edit, every later LayerNorm sees the edit.
        x = x - x.mean(-1, keepdim=True)
        return x / (x.pow(2).mean(-1, keepdim=True) + eps).sqrt()

    w = weights
    seq = tokens.shape[1]
    x = w["W_E"][tokens] + w["W_pos"][:seq]
    mask = torch.ones(seq, seq, dtype=torch.bool, device=x.device).tril()
    zs = []
    for l in range(w["W_Q"].shape[0]):
        h = layer_norm(x)
        q = torch.einsum("bsd,hde->bshe", h, w["W_Q"][l]) + w["b_Q"][l]
        k = torch.einsum("bsd,hde->bshe", h, w["W_K"][l]) + w["b_K"][l]
        v = torch.einsum("bsd,hde->bshe", h, w["W_V"][l]) + w["b_V"][l]
        scores = torch.einsum("bqhe,bkhe->bhqk", q, k) / math.sqrt(q.shape[-1])
        pattern = scores.masked_fill(~mask, float("-inf")).softmax(-1)
        if hook is not None:
            new = hook("pattern", l, pattern)
            pattern = pattern if new is None else new
        z = torch.einsum("bhqk,bkhe->bqhe", pattern, v)
        if hook is not None:
            new = hook("z", l, z)
            z = z if new is None else new
        zs.append(z)
        x = x + torch.einsum("bshe,hed->bsd", z, w["W_O"][l]) + w["b_O"][l]
        pre = layer_norm(x) @ w["W_in"][l] + w["b_in"][l]
        gelu = 0.5 * pre * (1 + torch.tanh(math.sqrt(2 / math.pi) * (pre + 0.044715 * pre ** 3)))
        x = x + gelu @ w["W_out"][l] + w["b_out"][l]
    return layer_norm(x) @ w["W_U"] + w["b_U"], zs


def logit_diff(logits, end, io, s):
    rows = torch.arange(logits.shape[0], device=logits.device)
    # Step 1: each prompt's logits at ITS END position: [batch, d_vocab].
    at_end = logits[rows, end]
    # Step 2: pick the IO and the S logit of each prompt and subtract.
    return at_end[rows, io] - at_end[rows, s]


def ablate_head(weights, tokens, end, io, s, layer, head, mode):
    # Step 1: a clean run, to read the head's z (its output before W_O) on these prompts.
    _, zs = run_model(weights, tokens)
    z_head = zs[layer][:, :, head]                            # [batch, seq, d_head]
    # Step 2: what replaces it: the mean over the PROMPTS at each position, or zero.
    if mode == "mean":
        fill = z_head.mean(dim=0)                             # [seq, d_head]
    else:
        fill = torch.zeros_like(z_head[0])

    # Step 3: rerun with a hook that swaps in the fill for this one head in this one layer.
    # Editing z edits the head's output z @ W_O; the attention pattern is left alone.
    def hook(name, l, tensor):
        if name != "z" or l != layer:
            return None
        tensor = tensor.clone()
        tensor[:, :, head] = fill
        return tensor

    logits, _ = run_model(weights, tokens, hook)
    # Step 4: the new logit difference (every later layer and LayerNorm was recomputed).
    return logit_diff(logits, end, io, s)


def patch_head_output(weights, clean_tokens, corrupt_tokens, end, io, s, layer, head, pos):
    # Step 1: the corrupted run provides the donor output of this head.
    _, zs_corrupt = run_model(weights, corrupt_tokens)
    rows = torch.arange(clean_tokens.shape[0], device=clean_tokens.device)
    donor = zs_corrupt[layer][rows, pos, head]                # [batch, d_head]: only at pos[b]

    # Step 2: the clean run, with the head's z at pos[b] replaced by the donor.
    def hook(name, l, tensor):
        if name != "z" or l != layer:
            return None
        tensor = tensor.clone()
        tensor[rows, pos, head] = donor
        return tensor

    logits, _ = run_model(weights, clean_tokens, hook)
    # Step 3: scored against the CLEAN prompt's own IO and S.
    return logit_diff(logits, end, io, s)


# --------------------------------------------------------------------------- 7. the null (optional)
def parallel_share_null(x_q, x_k, B, u, m):
    # Step 1: unit directions (a projection on an unnormalised u is |u|^2 too long).
    u_hat = u / u.norm(dim=-1, keepdim=True)                 # [draws, d]
    m_hat = m / m.norm(dim=-1, keepdim=True)
    # Step 2: per draw, the parallel parts' coefficients and the bilinear form between the directions.
    a = u_hat @ x_q                                          # x_q . û   [draws]
    b = m_hat @ x_k                                          # x_k . m̂   [draws]
    between = ((u_hat @ B) * m_hat).sum(-1)                  # û B m̂^T   [draws]
    # Step 3: that term's share of the whole bilinear score.
    share = a * b * between / (x_q @ B @ x_k)
    # Step 4: its mean (about 1/d^2) and its 95% band (much wider than the mean).
    return share.mean(), torch.quantile(share, 0.025), torch.quantile(share, 0.975)
