"""GPT-2-architecture toys of lesson 5 (``ioi_small``, ``copy_suppressor``): a config dict ->
a Hugging Face ``GPT2LMHeadModel`` -> a TransformerBridge in compatibility mode carrying its word
tokenizer as ``ioi_vocab`` (the same bridge path as GPT-2 small)."""
from __future__ import annotations

from typing import Any

import torch

from mechinterp_edu.lessons.ioi_scores.data import WordVocab


def hf_config(config: dict[str, Any]):
    from transformers import GPT2Config

    return GPT2Config(
        vocab_size=len(config["vocab"]), n_positions=config["n_ctx"], n_embd=config["d_model"],
        n_layer=config["n_layers"], n_head=config["n_heads"], n_inner=config["d_mlp"],
        activation_function=config["act_fn"], resid_pdrop=0.0, embd_pdrop=0.0, attn_pdrop=0.0,
        bos_token_id=0, eos_token_id=0, tie_word_embeddings=bool(config.get("tied", True)),
    )


def build_hf(config: dict[str, Any], seed: int = 0):
    """A freshly initialised ``GPT2LMHeadModel`` of the toy's shape."""
    from transformers import GPT2LMHeadModel

    torch.manual_seed(seed)
    return GPT2LMHeadModel(hf_config(config))


def wrap(hf_model, config: dict[str, Any]):
    """HF module -> TransformerBridge in compatibility mode, with the word tokenizer attached."""
    from mechinterp_edu.models.gpt2 import wrap_gpt2

    bridge = wrap_gpt2(hf_model.eval(), compat=True)
    bridge.ioi_vocab = WordVocab(config["vocab"])
    return bridge


def build(config: dict[str, Any]):
    """A random bridge of the toy's shape, already in compatibility mode.

    The checkpoint stores the *compatibility-mode* state dict (folded LayerNorm, centred
    weights), which loads straight into this bridge with ``load_state_dict(strict=True)``.
    """
    return wrap(build_hf(config), config)
