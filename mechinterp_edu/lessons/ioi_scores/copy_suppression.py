"""Is a head a copy-suppression head? Four measures after McDougall et al. (2023), batched.

The model is any TransformerLens-shaped GPT-2 in compatibility mode (LayerNorm folded, so each
LayerNorm only centres and divides by its scale): a ``TransformerBridge`` or the plain forward.
Row vectors throughout; ``name_ids`` are the token ids of the names [n].

(a) **Negative copying OV** (:func:`ov_matrix`): row X is what the head writes, read through the
    unembedding, when it attends to a position holding name X alone: ``LN(E_eff[X]) W_V W_O W_U``
    restricted to the names, with ``E_eff[X]`` the residual stream after block 0 on ``<bos> X``.
    Copy suppression puts X's own logit among the few most negative entries of its row.
(b) **Prediction-attention QK** (:func:`qk_matrix`): row X scores every name's key against the
    query the head would form if the residual stream were the unembedding direction ``W_U[:, X]``:
    ``(LN(W_U[:, X]) W_Q + b_Q) . (LN(E_eff[Y]) W_K + b_K) / sqrt(d_head)``. Copy suppression puts
    the largest score on the diagonal.
(c) **Behaviour** (:func:`behaviour`): on prompts where the logit lens before the head's layer
    predicts a name that is in the context, the head's attention from END to that name, its
    direct logit attribution to it, and what mean-ablating the head does to the model's
    probability of it; plus loss and expected calibration error with and without the head.
(d) **Four-term split** (:func:`four_term_shares`): the END -> X score minus the END -> Y score
    (Y another name in the context) split with the query along ``W_U[:, X]`` and each key along
    its own effective embedding, with a null from random directions in their place.
"""
from __future__ import annotations

import math
from typing import Optional

import torch
from jaxtyping import Float, Int
from torch import Tensor

from mechinterp_edu.lessons.ioi_scores.causal import z_fill_hook
from mechinterp_edu.lessons.ioi_scores.forward import ln_scale
from mechinterp_edu.lessons.ioi_scores.reference import four_terms, share_explained


class CopySuppressionInputError(ValueError):
    """Bad arguments; the message says which and what was expected."""


def _check_head(model, layer: int, head: int) -> None:
    if not 1 <= layer < model.cfg.n_layers:
        raise CopySuppressionInputError(
            f"layer must be in 1..{model.cfg.n_layers - 1} (the measures read block 0's output), got {layer}.")
    if not 0 <= head < model.cfg.n_heads:
        raise CopySuppressionInputError(f"head must be in 0..{model.cfg.n_heads - 1}, got {head}.")


def ln(x: Float[Tensor, "... d"], eps: float = 1e-5) -> Float[Tensor, "... d"]:
    """Folded LayerNorm: centre, divide by the root-mean-square."""
    return ln_scale(x, eps)[0]


def _param(t) -> Tensor:
    return t.detach().double().cpu()


@torch.no_grad()
def effective_embeddings(model, name_ids: Int[Tensor, "n"], bos_id: int = 0) -> Float[Tensor, "n d_model"]:
    """The residual stream after block 0 at position 1 of ``<bos> X``, for every name X."""
    tokens = torch.stack([torch.full_like(name_ids, bos_id), name_ids], 1)
    device = next(model.parameters()).device
    _, cache = model.run_with_cache(tokens.to(device))
    return cache["blocks.0.hook_resid_post"][:, 1].detach().double().cpu()


def _eps(model) -> float:
    return float(getattr(model.cfg, "eps", 1e-5))


def ov_matrix(model, layer: int, head: int, name_ids: Int[Tensor, "n"],
              eff: Optional[Tensor] = None) -> Float[Tensor, "n n"]:
    """Row X: the logits over names the head writes when it attends to E_eff[X] (no biases)."""
    _check_head(model, layer, head)
    eff = effective_embeddings(model, name_ids) if eff is None else eff
    W_OV = _param(model.W_V[layer, head]) @ _param(model.W_O[layer, head])
    return ln(eff, _eps(model)) @ W_OV @ _param(model.W_U)[:, name_ids.cpu()]


def qk_matrix(model, layer: int, head: int, name_ids: Int[Tensor, "n"],
              eff: Optional[Tensor] = None) -> Float[Tensor, "n n"]:
    """Row X: the score of every name's key for the query formed from W_U[:, X] (biases included)."""
    _check_head(model, layer, head)
    eff = effective_embeddings(model, name_ids) if eff is None else eff
    eps = _eps(model)
    q = ln(_param(model.W_U)[:, name_ids.cpu()].T, eps) @ _param(model.W_Q[layer, head]) + _param(model.b_Q[layer, head])
    k = ln(eff, eps) @ _param(model.W_K[layer, head]) + _param(model.b_K[layer, head])
    return q @ k.T / math.sqrt(q.shape[-1])


def own_rank_fraction(matrix: Float[Tensor, "n n"], k: int, lowest: bool) -> float:
    """Fraction of rows whose diagonal entry is among the k lowest (``lowest``) or highest entries."""
    m = -matrix if lowest else matrix
    diag = m.diagonal()
    rank = (m > diag[:, None]).sum(-1)            # entries strictly better than the diagonal
    return float((rank < k).double().mean())


def head_scan(model, name_ids: Int[Tensor, "n"]) -> list[dict[str, float]]:
    """(a) and (b) for every head of layers 1.. : one row per head."""
    eff = effective_embeddings(model, name_ids)
    rows = []
    for layer in range(1, model.cfg.n_layers):
        for head in range(model.cfg.n_heads):
            rows.append({"layer": layer, "head": head,
                         "ov_top3": own_rank_fraction(ov_matrix(model, layer, head, name_ids, eff), 3, True),
                         "qk_top1": own_rank_fraction(qk_matrix(model, layer, head, name_ids, eff), 1, False)})
    return rows


# --------------------------------------------------------------------------- (c) behaviour
def expected_calibration_error(probs: Float[Tensor, "b v"], answers: Int[Tensor, "b"], bins: int = 10) -> float:
    """ECE of the top prediction: sum over confidence bins of |accuracy - confidence| x bin share."""
    conf, pred = probs.max(-1)
    correct = (pred == answers).double()
    edges = torch.linspace(0, 1, bins + 1, dtype=conf.dtype)
    which = torch.bucketize(conf, edges[1:-1], right=True)
    acc = torch.zeros(bins, dtype=torch.float64).index_add_(0, which, correct)
    cf = torch.zeros(bins, dtype=torch.float64).index_add_(0, which, conf.double())
    return float(((acc - cf).abs()).sum() / len(conf))


@torch.no_grad()
def behaviour(model, layer: int, head: int, tokens: Int[Tensor, "b seq"], answers: Int[Tensor, "b"],
              name_ids: Int[Tensor, "n"], reference: Optional[Int[Tensor, "r seq"]] = None) -> dict[str, float]:
    """Measure (c) at the last position (END) of ``tokens``; ``answers`` are the true next tokens.

    The mean used for ablation is the head's ``hook_z`` averaged, per position, over ``reference``
    prompts (default: ``tokens`` themselves).
    """
    _check_head(model, layer, head)
    device = next(model.parameters()).device
    tokens, answers = tokens.to(device), answers.to(device)
    hook_name = f"blocks.{layer}.attn.hook_z"
    logits, cache = model.run_with_cache(tokens)
    ref_z = cache[hook_name] if reference is None else model.run_with_cache(reference.to(device))[1][hook_name]
    mean_z = ref_z[:, :, head].mean(0)                                             # [seq, d_head]
    ablated = model.run_with_hooks(tokens, fwd_hooks=[(hook_name, z_fill_hook(head, mean_z))])
    end = tokens.shape[1] - 1
    W_U = model.W_U.detach()
    lens = ln(cache[f"blocks.{layer}.hook_resid_pre"][:, end], _eps(model)) @ W_U + model.b_U.detach()
    names = name_ids.to(device)
    predicted = names[lens[:, names].argmax(-1)]                                   # [b]
    at_x = tokens == predicted[:, None]                                            # [b, seq]
    keep = at_x.any(-1)
    pattern = cache[f"blocks.{layer}.attn.hook_pattern"][:, head, end]            # [b, seq]
    attn_x = (pattern * at_x).sum(-1)
    out = cache[hook_name][:, end, head] @ model.W_O[layer, head].detach()         # [b, d_model]
    dla = (out / cache["ln_final.hook_scale"][:, end]) @ W_U                       # [b, d_vocab]
    rows = torch.arange(len(tokens), device=device)
    dla_x = dla[rows, predicted]
    p, p_abl = logits[:, end].softmax(-1).double(), ablated[:, end].softmax(-1).double()
    gain = (p_abl[rows, predicted] - p[rows, predicted])
    k = keep
    n_keep = int(k.sum())
    res = {"n_prompts": len(tokens), "n_predicted_present": n_keep}
    if n_keep:
        res.update({"attn_to_x": float(attn_x[k].mean()), "dla_x": float(dla_x[k].mean()),
                    "dla_x_negative": float((dla_x[k] < 0).double().mean()),
                    "p_x": float(p[k][rows[:n_keep], predicted[k]].mean()),
                    "p_x_ablated": float(p_abl[k][rows[:n_keep], predicted[k]].mean()),
                    "ablation_raises_p_x": float((gain[k] > 0).double().mean())})
    for tag, probs in (("", p), ("_ablated", p_abl)):
        res[f"loss{tag}"] = float(-probs[rows, answers].clamp_min(1e-30).log().mean())
        res[f"ece{tag}"] = expected_calibration_error(probs.cpu(), answers.cpu())
    return res


# --------------------------------------------------------------------------- (d) four terms
NULL_QUANTILES = (0.025, 0.975)   # the null band reported for (d)
TERMS = ("q_par_k_par", "q_par_k_perp", "q_perp_k_par", "q_perp_k_perp")


@torch.no_grad()
def four_term_inputs(model, layer: int, head: int, tokens: Int[Tensor, "b seq"],
                     name_ids: Int[Tensor, "n"]) -> dict[str, Tensor]:
    """Everything (d) needs, on the prompts whose pre-head prediction X is in the context.

    X's position is its first occurrence; the baseline Y is the name in the context (not at END,
    not X) that the logit lens before the head's layer rates lowest. Float64 on the CPU.
    """
    _check_head(model, layer, head)
    device = next(model.parameters()).device
    _, cache = model.run_with_cache(tokens.to(device))
    tokens = tokens.cpu()
    end = tokens.shape[1] - 1
    resid = cache[f"blocks.{layer}.hook_resid_pre"].double().cpu()                  # [b, seq, d]
    scale = cache[f"blocks.{layer}.ln1.hook_scale"].double().cpu()[..., 0]          # [b, seq]
    W_U = _param(model.W_U)
    lens = ln(resid[:, end], _eps(model)) @ W_U + _param(model.b_U)               # [b, vocab]
    names = name_ids.cpu()
    x_tok = names[lens[:, names].argmax(-1)]
    at_x = tokens == x_tok[:, None]
    is_name = torch.isin(tokens, names)
    candidates = is_name & ~at_x
    candidates[:, end] = False
    keep = at_x.any(-1) & candidates.any(-1)
    tok_lens = lens.gather(1, tokens).masked_fill(~candidates, math.inf)
    y_pos = tok_lens.argmin(-1)
    x_pos = at_x.double().argmax(-1)
    rows = torch.arange(len(tokens))
    eff_all = effective_embeddings(model, names)
    slot = torch.full((int(W_U.shape[1]),), -1, dtype=torch.long)
    slot[names] = torch.arange(len(names))
    y_tok = tokens[rows, y_pos]
    out = {"x_q": resid[:, end], "scale_q": scale[:, end], "u": W_U[:, x_tok].T,
           "x_k": resid[rows, x_pos], "scale_k": scale[rows, x_pos], "m": eff_all[slot[x_tok]],
           "x_b": resid[rows, y_pos], "scale_b": scale[rows, y_pos], "m_b": eff_all[slot[y_tok]],
           "W_Q": _param(model.W_Q[layer, head]), "b_Q": _param(model.b_Q[layer, head]),
           "W_K": _param(model.W_K[layer, head]), "b_K": _param(model.b_K[layer, head])}
    return {k: (v[keep] if v.shape[0] == len(tokens) and k not in ("W_Q", "W_K") else v) for k, v in out.items()}


def _shares(inp: dict[str, Tensor], u: Tensor, m: Tensor, m_b: Tensor) -> Tensor:
    w = (inp["W_Q"], inp["b_Q"], inp["W_K"], inp["b_K"])
    terms = four_terms(inp["x_q"], inp["scale_q"], u, inp["x_k"], inp["scale_k"], m, w[0], w[1], w[2], w[3])
    base = four_terms(inp["x_q"], inp["scale_q"], u, inp["x_b"], inp["scale_b"], m_b, w[0], w[1], w[2], w[3])
    return share_explained(terms, base)


def four_term_shares(inp: dict[str, Tensor], n_null: int = 200, seed: int = 0) -> dict[str, float]:
    """Shares of the net score (END -> X minus END -> Y) carried by each term, and the null.

    Null: the same split with u, m and m_b replaced by independent uniformly random directions
    (one draw per prompt, ``n_null`` draws); reports the mean and the 2.5%/97.5% quantiles of
    the q_par_k_par share.
    """
    shares = _shares(inp, inp["u"], inp["m"], inp["m_b"])
    gen = torch.Generator().manual_seed(seed)
    b, d = inp["u"].shape
    null = torch.stack([_shares(inp, *(torch.randn(b, d, generator=gen, dtype=torch.float64) for _ in range(3)))[0]
                        for _ in range(n_null)])
    res = {f"d_{name}": float(v) for name, v in zip(TERMS, shares)}
    res.update({"d_share": float(shares[0]), "d_par_par_largest": bool(shares.argmax() == 0),
                "d_null_mean": float(null.mean()), "d_null_lo": float(null.quantile(NULL_QUANTILES[0])),
                "d_null_hi": float(null.quantile(NULL_QUANTILES[1])), "d_n_prompts": b})
    return res


def passes(row: dict[str, float]) -> dict[str, bool]:
    """The issue's thresholds for (a), (b), (c) and (d)."""
    return {
        "a": row.get("ov_top3", 0.0) >= 0.8,
        "b": row.get("qk_top1", 0.0) >= 0.8,
        "c": (row.get("attn_to_x", 0.0) >= 0.3 and row.get("dla_x", 0.0) < 0
              and row.get("p_x_ablated", 0.0) > row.get("p_x", 1.0)),
        "d": bool(row.get("d_par_par_largest", False)) and row.get("d_share", 0.0) > row.get("d_null_hi", 1.0),
    }
