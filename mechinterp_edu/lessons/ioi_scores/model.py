"""Recipe: ``ioi_small``, a small GPT-2-architecture model trained on synthetic IOI (lesson 5).

The model is a real Hugging Face ``GPT2LMHeadModel`` (LayerNorm, GELU MLPs, tied
embedding/unembedding, learned positions), trained with a word-level vocabulary on the
prompts of :mod:`mechinterp_edu.lessons.ioi_scores.data`, then wrapped exactly like GPT-2 small:
``build_bridge_from_module`` plus ``enable_compatibility_mode()`` (LayerNorm folded, writing
weights centred, unembedding centred). The lesson's code therefore runs unchanged on the
toy and on GPT-2 small.

Training: next-token cross-entropy at the END position only (the one position whose answer
is determined), AdamW, linear warm-up then cosine decay, fresh prompts every step from a
fixed seed. Evaluation: argmax over the whole vocabulary at END must be the IO name, on

* ``accuracy``: held-out name pairs *and* held-out places/objects, training templates;
* ``accuracy_heldout_template``: the same, on a template never seen in training;
* ``accuracy_train``: training distribution (for reference); ``logit_diff``: mean
  logit(IO) - logit(S) on the held-out prompts.

Rebuild the shipped checkpoint with ``python -m mechinterp_edu train ioi_small``.
"""
from __future__ import annotations

import math
import time
from typing import Any, Optional

import torch

from mechinterp_edu.device import get_device
from mechinterp_edu.course import collector
from mechinterp_edu.models.zoo import ModelSpec, TrainResult
from mechinterp_edu.lessons.ioi_scores.gpt2_toy import build, build_hf, hf_config, wrap  # noqa: F401
from mechinterp_edu.lessons.ioi_scores.data import (
    SEQ_LEN,
    WordVocab,
    build_vocab,
    encode_prompts,
    sample_prompts,
)

MODELS: list[ModelSpec] = []
register = collector(MODELS)

VOCAB: list[str] = build_vocab()

CONFIG: dict[str, Any] = {
    "architecture": "GPT2LMHeadModel",
    "n_layers": 3,
    "n_heads": 4,
    "d_model": 64,
    "d_mlp": 256,
    "n_ctx": 16,
    "act_fn": "gelu_new",
    "vocab": VOCAB,          # the word-level tokenizer, in token-id order
}

RECIPE: dict[str, Any] = {
    "seed": 0,
    "steps": 600,
    "batch_size": 128,
    "lr": 1e-2,
    "warmup_steps": 50,
    "weight_decay": 0.01,
    "betas": (0.9, 0.98),
    "loss": "cross-entropy at END only",
    "eval_prompts": 1000,
}


def vocab_of(config_or_model) -> WordVocab:
    """The word-level tokenizer stored in the config (or on a loaded model)."""
    if hasattr(config_or_model, "ioi_vocab"):
        return config_or_model.ioi_vocab
    config = config_or_model if isinstance(config_or_model, dict) else CONFIG
    return WordVocab(config["vocab"])


def _lr_at(step: int, steps: int, recipe: dict[str, Any]) -> float:
    warm = min(1.0, (step + 1) / max(1, recipe["warmup_steps"]))
    return recipe["lr"] * warm * 0.5 * (1.0 + math.cos(math.pi * step / max(1, steps)))


def train(steps: Optional[int] = None, device: torch.device | str | None = None, progress: bool = True,
          batch_size: Optional[int] = None, eval_prompts: Optional[int] = None) -> TrainResult:
    """Train from the exact recipe (``steps=None``: the full recipe) and return the bridge."""
    from tqdm.auto import tqdm

    recipe = dict(RECIPE)
    if steps is not None:
        recipe["steps"] = int(steps)
    if batch_size is not None:
        recipe["batch_size"] = int(batch_size)
    if eval_prompts is not None:
        recipe["eval_prompts"] = int(eval_prompts)
    device = torch.device(device) if device is not None else get_device()
    vocab = WordVocab(CONFIG["vocab"])
    model = build_hf(CONFIG, seed=recipe["seed"]).to(device).train()
    opt = torch.optim.AdamW(model.parameters(), lr=recipe["lr"], betas=tuple(recipe["betas"]),
                            weight_decay=recipe["weight_decay"])
    # One CPU thread: the model is tiny, and on a shared machine extra threads only contend.
    threads_before = torch.get_num_threads()
    if device.type == "cpu":
        torch.set_num_threads(1)
        recipe["cpu_threads"] = 1
    try:
        model, loss_value, seconds = _train_loop(model, opt, vocab, recipe, device, progress, tqdm)
    finally:
        torch.set_num_threads(threads_before)
    bridge = wrap(model.eval(), CONFIG)
    metrics = evaluate(bridge, n=recipe["eval_prompts"])
    metrics["final_loss"] = loss_value
    recipe["train_seconds"] = round(seconds, 1)
    recipe["device"] = str(device)
    recipe["betas"] = list(recipe["betas"])
    return TrainResult(bridge, metrics, recipe)


def _train_loop(model, opt, vocab, recipe, device, progress, tqdm):
    start = time.perf_counter()
    bar = tqdm(range(recipe["steps"]), desc="ioi_small", disable=not progress)
    loss_value = float("nan")
    for step in bar:
        batch = encode_prompts(sample_prompts(recipe["batch_size"], "train",
                                              seed=recipe["seed"] * 1_000_003 + step), vocab).to(device)
        for group in opt.param_groups:
            group["lr"] = _lr_at(step, recipe["steps"], recipe)
        logits = model(batch.tokens).logits[:, -1]
        loss = torch.nn.functional.cross_entropy(logits, batch.io_tokens)
        opt.zero_grad(set_to_none=True)
        loss.backward()
        opt.step()
        loss_value = float(loss.detach())
        if step % 20 == 0:
            bar.set_postfix(loss=f"{loss_value:.4f}")
    return model, loss_value, time.perf_counter() - start


@torch.no_grad()
def evaluate(model, n: int = 1000) -> dict[str, float]:
    """Held-out accuracies (argmax over the whole vocabulary at END equals IO) and logit diff."""
    vocab = vocab_of(model)
    device = next(model.parameters()).device
    out: dict[str, float] = {}
    for key, split in (("accuracy", "test"), ("accuracy_heldout_template", "heldout_template"),
                       ("accuracy_train", "train")):
        batch = encode_prompts(sample_prompts(n, split, seed=12345), vocab).to(device)
        logits = model(batch.tokens)[:, -1].double()
        out[key] = float((logits.argmax(-1) == batch.io_tokens).double().mean())
        if split == "test":
            rows = torch.arange(len(batch), device=device)
            out["logit_diff"] = float((logits[rows, batch.io_tokens] - logits[rows, batch.s_tokens]).mean())
    return out


SPEC = register(ModelSpec(
    name="ioi_small",
    description=("3-layer GPT-2-architecture model (4 heads, d_model 64, LayerNorm, MLPs) trained "
                 "on synthetic IOI with a word-level vocabulary"),
    lessons=(5,),
    config=CONFIG,
    build=build,
    train=train,
    evaluate=evaluate,
    headline_metric="accuracy",
    extra={"seq_len": SEQ_LEN},
))


def load(device: torch.device | str | None = None, dtype: torch.dtype = torch.float32):
    """``load_model("ioi_small")`` with the word tokenizer attached as ``model.ioi_vocab``."""
    from mechinterp_edu.models.zoo import load_model

    model = load_model("ioi_small", device=device, dtype=dtype)
    model.ioi_vocab = WordVocab(CONFIG["vocab"])
    return model


# The second model of lesson 5 (issue #13): its recipe lives in copy_suppressor.py.
from mechinterp_edu.lessons.ioi_scores.copy_suppressor import SPEC as COPY_SUPPRESSOR_SPEC  # noqa: E402

register(COPY_SUPPRESSOR_SPEC)
