"""Numbers that lesson 1's text states (``{{name}}`` placeholders), computed here.

Each fact is asserted by ``tests/test_lesson_facts.py`` against an independent computation.
"""
from __future__ import annotations

import functools

import torch

N_CHECK_SEQUENCES = 256   # held-out sequences on which the tensor-product logits are compared


@functools.lru_cache(maxsize=1)
def facts() -> dict[str, object]:
    from mechinterp_edu.models.zoo import get_spec, load_model
    from mechinterp_edu.lessons.tensor_products import reference as tp

    spec = get_spec("skip_trigrams")
    model = load_model("skip_trigrams", device="cpu", dtype=torch.float64)
    w = tp.model_weights(model)
    tokens = _check_tokens(spec)
    with torch.no_grad():
        ours = tp.tensor_product_logits(tokens, *[w[k] for k in ("W_E", "W_pos", "W_Q", "W_K", "W_V", "W_O", "W_U")])
        theirs = model(tokens)
    return {
        "n_heads": int(spec.config["n_heads"]),
        "d_vocab": int(spec.config["d_vocab"]),
        "n_check_sequences": N_CHECK_SEQUENCES,
        "n_check_positions": int(tokens.shape[-1]),
        "logit_max_abs_error": float((ours - theirs).abs().max()),
        "logit_max_abs": float(theirs.abs().max()),
    }


def _check_tokens(spec) -> torch.Tensor:
    """[N_CHECK_SEQUENCES, n_ctx] random token sequences (fixed seed), BOS first."""
    gen = torch.Generator().manual_seed(2021)
    d_vocab, n_ctx = spec.config["d_vocab"], spec.config["n_ctx"]
    tokens = torch.randint(1, d_vocab, (N_CHECK_SEQUENCES, n_ctx), generator=gen)
    tokens[:, 0] = 0
    return tokens
