"""Random one-layer attention-only toy models and random weights, for lessons on small models.

``random_toy_model(shape)`` builds a boot_native bridge (1 layer, attention only, no LayerNorm,
learned positional embeddings); ``random_weights`` draws plain tensors in TransformerLens shapes
without a model object; ``trained_weights`` reads a shipped attention-only checkpoint's weights
(no bridge) together with an encoded prompt.
"""
from __future__ import annotations

import math
from typing import Optional

import torch
from jaxtyping import Int
from torch import Tensor

# Randomly initialised toy shapes offered next to the trained model (1 layer, attention only,
# no LayerNorm, biases zero, learned positional embeddings).
TOY_SHAPES: dict[str, dict[str, int]] = {
    "random-4h": dict(d_vocab=12, d_model=16, n_heads=4, d_head=4, n_ctx=10),
    "random-8h": dict(d_vocab=20, d_model=32, n_heads=8, d_head=4, n_ctx=12),
    "random-1h": dict(d_vocab=9, d_model=8, n_heads=1, d_head=8, n_ctx=6),
}


def random_toy_model(shape: str | dict, seed: int = 0, *, biases: bool = False, init_scale: float = 2.0,
                     dtype: torch.dtype = torch.float32, device=None):
    """A randomly initialised one-layer attention-only boot_native bridge.

    ``init_scale``: weight std is ``init_scale / sqrt(d_model)`` (2.0 makes attention clearly
    non-uniform). ``biases=False`` zeroes and freezes every bias (the lesson's model);
    ``biases=True`` draws them at random (to show what biases add).
    """
    from mechinterp_edu.models.native import boot_native_bridge, zero_and_freeze_biases

    dims = TOY_SHAPES[shape] if isinstance(shape, str) else dict(shape)
    cfg = dict(d_model=dims["d_model"], d_head=dims["d_head"], n_heads=dims["n_heads"], n_layers=1,
               n_ctx=dims["n_ctx"], d_vocab=dims["d_vocab"], attn_only=True, normalization_type=None,
               seed=seed, initializer_range=init_scale / math.sqrt(dims["d_model"]))
    model = boot_native_bridge(cfg)
    zero_and_freeze_biases(model)
    if biases:
        gen = torch.Generator().manual_seed(10_000 + seed)
        with torch.no_grad():
            for name, param in model.named_parameters():
                if name.endswith("bias"):
                    param.copy_(0.5 * torch.randn(param.shape, generator=gen))
    model = model.to(dtype)
    if device is not None:
        model = model.to(device)
    model.eval()
    return model


def random_weights(d_vocab: int, d_model: int, n_heads: int, d_head: int, n_ctx_max: int, seed: int = 0,
                   dtype: torch.dtype = torch.float64, scale: float = 2.0) -> dict[str, torch.Tensor]:
    """Plain random weights in TransformerLens shapes (no model object): embeddings and W_Q/W_K
    with std ``scale/sqrt(d_model)`` (non-uniform attention), W_V/W_O/W_U with std 1/sqrt(fan-in)."""
    gen = torch.Generator().manual_seed(seed)

    def draw(*shape, std):
        return (torch.randn(*shape, generator=gen, dtype=torch.float64) * std).to(dtype)

    s = scale / math.sqrt(d_model)
    return {
        "W_E": draw(d_vocab, d_model, std=s), "W_pos": draw(n_ctx_max, d_model, std=s),
        "W_Q": draw(n_heads, d_model, d_head, std=s), "W_K": draw(n_heads, d_model, d_head, std=s),
        "W_V": draw(n_heads, d_model, d_head, std=1 / math.sqrt(d_model)),
        "W_O": draw(n_heads, d_head, d_model, std=1 / math.sqrt(d_head)),
        "W_U": draw(d_model, d_vocab, std=1 / math.sqrt(d_model)),
    }


FALLBACK = "random-4h"


def load_toy(name: str, dtype: torch.dtype = torch.float32, device=None):
    """A random toy shape (a key of TOY_SHAPES) or a shipped zoo model by name; raises if it cannot."""
    if name in TOY_SHAPES:
        return random_toy_model(name, dtype=dtype, device=device)
    from mechinterp_edu.models.zoo import load_model
    return load_model(name, device=device or "cpu", dtype=dtype)


def fallback_note(name: str, exc: BaseException) -> str:
    """One sentence: why the trained model ``name`` is not shown, and what is shown instead."""
    first = str(exc).splitlines()[0] if str(exc) else "no detail"
    return f"The trained {name} model could not be loaded ({type(exc).__name__}: {first}); showing {FALLBACK} instead."


def load_toy_or_fallback(name: str, dtype: torch.dtype = torch.float32, device=None):
    """(model, note): :func:`load_toy`, or the random ``FALLBACK`` model with a note saying why
    (``note`` is "" when the model asked for was loaded)."""
    try:
        return load_toy(name, dtype=dtype, device=device), ""
    except Exception as exc:  # noqa: BLE001 - missing recipe or checkpoint: say so, use a random model
        return random_toy_model(FALLBACK, dtype=dtype, device=device), fallback_note(name, exc)


_TRAINED: dict[tuple[str, str, torch.dtype], tuple[dict[str, Tensor], Int[Tensor, "n_ctx"]]] = {}


def trained_weights(name: str, prompt: str = "",
                    dtype: torch.dtype = torch.float64) -> Optional[tuple[dict[str, Tensor], Int[Tensor, "n_ctx"]]]:
    """(weights, prompt tokens) of the shipped attention-only model ``name``, or None if its
    checkpoint cannot be read. The prompt is encoded by the model's own ``extra["encode"]``.
    Only successful loads are cached, so a checkpoint written later is picked up."""
    key = (name, prompt, dtype)
    if key not in _TRAINED:
        try:
            # Straight from the checkpoint: no bridge, no TransformerLens import
            # (a test checks these equal the loaded bridge's own weights).
            from mechinterp_edu.models.checkpoint_weights import attn_only_weights
            from mechinterp_edu.models.zoo import get_spec
            weights = attn_only_weights(name, dtype=dtype)
            tokens = torch.tensor(get_spec(name).extra["encode"](prompt), dtype=torch.long)
        except Exception:  # noqa: BLE001 - a missing checkpoint drops these cases, it does not break grading
            return None
        _TRAINED[key] = weights, tokens
    return _TRAINED[key]
