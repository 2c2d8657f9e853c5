"""Pull weights out of a TransformerBridge in TransformerLens shapes.

Shapes (row-vector convention, ``x @ W``):
    W_E [d_vocab, d_model], W_pos [n_ctx, d_model],
    W_Q, W_K, W_V [n_heads, d_model, d_head], W_O [n_heads, d_head, d_model],
    W_U [d_model, d_vocab]; b_Q, b_K, b_V [n_heads, d_head], b_O [d_model], b_U [d_vocab].
"""
from __future__ import annotations

from typing import Optional

import torch


def layer_weights(model, layer: int = 0, dtype: Optional[torch.dtype] = None,
                  device: torch.device | str | None = None) -> dict[str, torch.Tensor]:
    """The embedding, one layer's attention weights and the unembedding, detached."""
    out = {
        "W_E": model.W_E, "W_pos": model.W_pos,
        "W_Q": model.W_Q[layer], "W_K": model.W_K[layer],
        "W_V": model.W_V[layer], "W_O": model.W_O[layer],
        "b_Q": model.b_Q[layer], "b_K": model.b_K[layer],
        "b_V": model.b_V[layer], "b_O": model.b_O[layer],
        "W_U": model.W_U, "b_U": model.b_U,
    }
    result = {}
    for key, value in out.items():
        value = value.detach().clone()
        if dtype is not None:
            value = value.to(dtype)
        if device is not None:
            value = value.to(device)
        result[key] = value
    return result
