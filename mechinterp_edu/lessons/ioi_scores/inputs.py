"""Lesson 5: everything one head's score decompositions need, gathered from one forward pass.

:func:`gather_head_inputs` runs the model once with a cache and collects, at END (query), the
target key and the baseline key, the residual-stream components (earlier heads, MLPs,
embeddings, summed b_O) with their frozen LayerNorm scales, the head's weights and its real
q and k (see :mod:`mechinterp_edu.lessons.ioi_scores.reference` for the decompositions).
"""
from __future__ import annotations

import math
from dataclasses import dataclass, field

import torch


class ScoreInputError(ValueError):
    """Bad shapes or arguments; the message says which argument and what was expected."""


def _need(name: str, tensor, ndim: int, hint: str) -> None:
    if not isinstance(tensor, torch.Tensor):
        raise ScoreInputError(f"{name} must be a torch.Tensor {hint}, got {type(tensor).__name__}.")
    if tensor.ndim != ndim:
        raise ScoreInputError(f"{name} must be {ndim}-D {hint}, got shape {tuple(tensor.shape)}.")


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
