"""Recipe: ``copy_suppressor``, a small GPT-2-architecture model trained on no-repeat name lists.

Same architecture and loading path as ``ioi_small`` (a Hugging Face ``GPT2LMHeadModel``
wrapped with ``build_bridge_from_module`` + compatibility mode), trained with next-token
cross-entropy at every position on the lists of :mod:`copy_suppressor_data`.
"""
from __future__ import annotations

import copy
import math
import time
from typing import Any, Optional

import torch

from mechinterp_edu.models.zoo import ModelSpec, TrainResult
from mechinterp_edu.lessons.ioi_scores.copy_suppressor_data import (
    NAME_IDS, NAMES, VOCAB, ListTask, sample_lists,
)
from mechinterp_edu.lessons.ioi_scores.gpt2_toy import build, build_hf, hf_config, wrap  # noqa: F401

__all__ = ["NAMES", "CONFIG", "RECIPE", "COPY_HEAD", "SPEC", "build", "wrap", "train", "evaluate", "load"]

NAME = "copy_suppressor"
COPY_HEAD: tuple[int, int] = (1, 0)      # (layer, head) of the copy-suppression head
HELDOUT_SEED = 987_654_321               # held-out lists (training draws seeds seed * 1_000_003 + step)

CONFIG: dict[str, Any] = {
    "architecture": "GPT2LMHeadModel",
    "n_layers": 2,
    "n_heads": 1,
    "d_model": 64,
    "d_mlp": 256,
    "n_ctx": 17,
    "act_fn": "gelu_new",
    "tied": True,
    "vocab": list(VOCAB),
}

RECIPE: dict[str, Any] = {
    "seed": 0,
    "steps": 4000,
    "batch_size": 64,
    "lr": 1e-2,
    "warmup_steps": 50,
    "weight_decay": 0.1,
    "betas": (0.9, 0.98),
    "task": {"length": 12, "temperature": 1.5, "table_seed": 0, "p_repeat": 0.0, "label_noise": 0.0,
             "n_topics": 8, "balanced": 4, "p_no_topic": 0.5},
}


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


def heldout(n: int = 2000, task: Optional[ListTask] = None) -> tuple[torch.Tensor, torch.Tensor]:
    """Held-out prompts (lists without their last name) and the true next names: ([n, seq], [n])."""
    lists = sample_lists(n, task or ListTask(**RECIPE["task"]), seed=HELDOUT_SEED)
    return lists[:, :-1], lists[:, -1]


def train(steps: Optional[int] = None, device: torch.device | str | None = None, progress: bool = True,
          eval_prompts: int = 2000) -> TrainResult:
    """Train from the exact recipe (``steps=None``: the full recipe) and return the bridge."""
    from mechinterp_edu.device import get_device

    recipe = copy.deepcopy(RECIPE)
    if steps is not None:
        recipe["steps"] = int(steps)
    device = torch.device(device) if device is not None else get_device()
    threads_before = torch.get_num_threads()
    if device.type == "cpu":       # the model is tiny; on a shared machine extra threads only contend
        torch.set_num_threads(1)
        recipe["cpu_threads"] = 1
    try:
        model, loss_value, seconds = train_hf(CONFIG, recipe, device, log_every=200 if progress else 0)
    finally:
        torch.set_num_threads(threads_before)
    bridge = wrap(model, CONFIG)
    metrics = evaluate(bridge, n=eval_prompts)
    metrics["final_loss"] = loss_value
    recipe.update(train_seconds=round(seconds, 1), device=str(device), betas=list(recipe["betas"]))
    return TrainResult(bridge, metrics, recipe)


@torch.no_grad()
def evaluate(model, n: int = 2000) -> dict[str, float]:
    """(a)-(d) for the copy-suppression head, on held-out lists; keys as in ``copy_suppression``."""
    from mechinterp_edu.lessons.ioi_scores import copy_suppression as cs

    layer, head = COPY_HEAD
    tokens, answers = heldout(n)
    eff = cs.effective_embeddings(model, NAME_IDS)
    out = {"ov_top3": cs.own_rank_fraction(cs.ov_matrix(model, layer, head, NAME_IDS, eff), 3, True),
           "qk_top1": cs.own_rank_fraction(cs.qk_matrix(model, layer, head, NAME_IDS, eff), 1, False)}
    out.update(cs.behaviour(model, layer, head, tokens, answers, NAME_IDS))
    shares = cs.four_term_shares(cs.four_term_inputs(model, layer, head, tokens[:500], NAME_IDS), n_null=100)
    out.update({k: float(v) for k, v in shares.items()})
    return out


SPEC = ModelSpec(
    name=NAME,
    description=("GPT-2-architecture model trained on no-repeat name lists; head "
                 f"{COPY_HEAD[0]}.{COPY_HEAD[1]} suppresses the predicted name when it is already in the list"),
    lessons=(5,),
    config=CONFIG,
    build=build,
    train=train,
    evaluate=evaluate,
    headline_metric="ov_top3",
    extra={"copy_head": COPY_HEAD, "names": NAMES},
)


def load(device: torch.device | str | None = None, dtype: torch.dtype = torch.float32):
    """``load_model("copy_suppressor")`` (the bridge carries ``ioi_vocab``)."""
    from mechinterp_edu.models.zoo import load_model

    return load_model(NAME, device=device, dtype=dtype)
