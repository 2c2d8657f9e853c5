"""Recipe: ``copy_suppressor``, a small GPT-2-architecture model trained on no-repeat name lists.

Same architecture and loading path as ``ioi_small`` (a Hugging Face ``GPT2LMHeadModel``
wrapped with ``build_bridge_from_module`` + compatibility mode), trained with next-token
cross-entropy at every position on the lists of :mod:`copy_suppressor_data`.
"""
from __future__ import annotations

import math
import time
from typing import Any, Optional

import torch

from mechinterp_edu.lessons.ioi_scores.copy_suppressor_data import (
    NAMES, VOCAB, ListTask, sample_lists,
)
from mechinterp_edu.reference.ioi_data import WordVocab

__all__ = ["NAMES", "CONFIG", "RECIPE", "build", "build_hf", "wrap", "train_hf"]

CONFIG: dict[str, Any] = {
    "architecture": "GPT2LMHeadModel",
    "n_layers": 2,
    "n_heads": 4,
    "d_model": 64,
    "d_mlp": 256,
    "n_ctx": 17,
    "act_fn": "gelu_new",
    "tied": True,
    "vocab": list(VOCAB),
}

RECIPE: dict[str, Any] = {
    "seed": 0,
    "steps": 1500,
    "batch_size": 64,
    "lr": 3e-3,
    "warmup_steps": 50,
    "weight_decay": 0.1,
    "betas": (0.9, 0.98),
    "task": {"length": 16, "temperature": 1.5, "table_seed": 0, "p_repeat": 0.0, "label_noise": 0.0},
}


def hf_config(config: dict[str, Any]):
    from transformers import GPT2Config

    return GPT2Config(
        vocab_size=len(config["vocab"]), n_positions=config["n_ctx"], n_embd=config["d_model"],
        n_layer=config["n_layers"], n_head=config["n_heads"], n_inner=config["d_mlp"],
        activation_function=config["act_fn"], resid_pdrop=0.0, embd_pdrop=0.0, attn_pdrop=0.0,
        bos_token_id=0, eos_token_id=0, tie_word_embeddings=bool(config.get("tied", True)),
    )


def build_hf(config: dict[str, Any], seed: int = 0):
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
    return wrap(build_hf(config), config)


def _lr_at(step: int, recipe: dict[str, Any]) -> float:
    warm = min(1.0, (step + 1) / max(1, recipe["warmup_steps"]))
    return recipe["lr"] * warm * 0.5 * (1.0 + math.cos(math.pi * step / max(1, recipe["steps"])))


def train_hf(config: dict[str, Any], recipe: dict[str, Any], device: torch.device | str = "cpu",
             progress: bool = False, log_every: int = 0):
    """Train a fresh HF model from ``recipe``; returns (model, final loss, seconds)."""
    task = ListTask(**recipe["task"])
    model = build_hf(config, seed=recipe["seed"]).to(device).train()
    opt = torch.optim.AdamW(model.parameters(), lr=recipe["lr"], betas=tuple(recipe["betas"]),
                            weight_decay=recipe["weight_decay"])
    start, loss_value = time.perf_counter(), float("nan")
    for step in range(recipe["steps"]):
        tokens = sample_lists(recipe["batch_size"], task, seed=recipe["seed"] * 1_000_003 + step).to(device)
        for group in opt.param_groups:
            group["lr"] = _lr_at(step, recipe)
        logits = model(tokens[:, :-1]).logits
        loss = torch.nn.functional.cross_entropy(logits.flatten(0, 1), tokens[:, 1:].flatten())
        opt.zero_grad(set_to_none=True)
        loss.backward()
        opt.step()
        loss_value = float(loss.detach())
        if log_every and step % log_every == 0:
            print(f"step {step} loss {loss_value:.4f} ({time.perf_counter() - start:.0f} s)", flush=True)
    return model.eval(), loss_value, time.perf_counter() - start
