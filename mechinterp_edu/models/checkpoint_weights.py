"""Read an attention-only toy checkpoint straight into TransformerLens-shaped weights.

Grading needs the trained weights, not the model object; building a bridge costs a
TransformerLens import (seconds). The state dict of a TL-native bridge stores each
attention projection as an ``nn.Linear`` weight ``[out, in]``, heads concatenated
along ``out`` (head-major), so:

    W_Q[h] = q.weight.T[:, h*d_head:(h+1)*d_head]  ->  W_Q [n_heads, d_model, d_head]
    W_O[h] = o.weight.T[h*d_head:(h+1)*d_head, :]  ->  W_O [n_heads, d_head, d_model]

Tests check the result against the loaded bridge's own ``W_Q``... properties.
"""
from __future__ import annotations

from pathlib import Path
from typing import Optional

import torch

from mechinterp_edu.models.zoo import CheckpointError, get_spec, read_checkpoint


def attn_only_weights(name: str, layer: int = 0, dtype: torch.dtype = torch.float32,
                      path: Optional[Path] = None) -> dict[str, torch.Tensor]:
    """W_E [d_vocab, d_model], W_pos [n_ctx, d_model], W_Q/W_K/W_V [n_heads, d_model, d_head],
    W_O [n_heads, d_head, d_model], W_U [d_model, d_vocab] and the biases b_Q/b_K/b_V
    [n_heads, d_head], b_O [d_model], b_U [d_vocab] of one layer of a TL-native checkpoint."""
    payload = read_checkpoint(name, path)
    config, state = payload["config"], payload["state_dict"]
    n_heads, d_head = int(config["n_heads"]), int(config["d_head"])
    prefix = f"blocks.{layer}.attn."
    try:
        def heads_in(key: str) -> torch.Tensor:      # [h*d_head, d_model] -> [h, d_model, d_head]
            return state[prefix + key].reshape(n_heads, d_head, -1).transpose(1, 2)

        out = {
            "W_E": state["embed.weight"],
            "W_pos": state["pos_embed.weight"],
            "W_Q": heads_in("q.weight"), "W_K": heads_in("k.weight"), "W_V": heads_in("v.weight"),
            # o.weight [d_model, h*d_head] -> [h, d_head, d_model]
            "W_O": state[prefix + "o.weight"].T.reshape(n_heads, d_head, -1),
            "W_U": state["unembed.weight"].T,
            "b_Q": state[prefix + "q.bias"].reshape(n_heads, d_head),
            "b_K": state[prefix + "k.bias"].reshape(n_heads, d_head),
            "b_V": state[prefix + "v.bias"].reshape(n_heads, d_head),
            "b_O": state[prefix + "o.bias"],
            "b_U": state.get("unembed.bias", torch.zeros(state["unembed.weight"].shape[0])),
        }
    except (KeyError, RuntimeError) as exc:
        spec = get_spec(name)
        raise CheckpointError(
            f"The checkpoint for {name!r} does not hold an attention-only layer {layer} "
            f"({type(exc).__name__}: {exc}). Rebuild it with `{spec.rebuild_command}`."
        ) from None
    return {k: v.to(dtype).contiguous() for k, v in out.items()}
