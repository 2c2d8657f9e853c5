"""Recipe for ``max_of_4``: the max-of-K model of Gross et al. 2024 (lesson 4).

Architecture: 1 layer, 1 head, attention only, no LayerNorm, biases fixed at zero,
d_vocab 64, d_model = d_head = 32, n_ctx 4. Task: read 4 uniform random tokens and
output the largest one at the last position (the loss is taken there only).

Recipe (``RECIPE``): AdamW (lr 1e-3, betas 0.9/0.999, torch's default weight decay 0.01),
batch 128 of fresh uniform sequences per step, 3000 steps, default initialisation, seed
fixed. Data come from a CPU generator, so the batches are the same on every device.

The bug lab trains the same recipe with one or both training bugs of the lesson's notes:
``last_token_target`` (the target is the last token, not the max) and
``sqrt_d_multiplier`` (attention scores multiplied by sqrt(d_head) instead of divided);
see :func:`train`. Those take seconds, so they are not shipped as checkpoints.
"""
from __future__ import annotations

import math
import time
from typing import Any, Iterable, Optional

import torch

from mechinterp_edu.course import collector
from mechinterp_edu.lessons.max_of_k import bug_lab
from mechinterp_edu.lessons.max_of_k import reference as ref
from mechinterp_edu.models.zoo import ModelSpec, TrainResult

MODELS: list[ModelSpec] = []
register = collector(MODELS)

NAME = "max_of_4"

CONFIG: dict[str, Any] = {
    "n_layers": 1,
    "n_heads": 1,
    "d_model": 32,
    "d_head": 32,
    "d_vocab": 64,
    "d_vocab_out": 64,
    "n_ctx": 4,
    "attn_only": True,
    "normalization_type": None,
}

RECIPE: dict[str, Any] = {
    "seed": 0,              # torch.manual_seed before building: the initial weights
    "data_seed": 1,         # a separate CPU generator: the training batches
    "steps": 3000,
    "batch_size": 128,
    "lr": 1e-3,
    "betas": (0.9, 0.999),
    "weight_decay": 0.01,   # torch.optim.AdamW's default
    "target": "max",        # read at the last position
    "bugs": (),
    "cpu_threads": 1,       # the matrices are tiny: one thread is fastest and avoids contention
}

TRAINING_BUGS = tuple(bug_lab.TRAINING_BUGS)   # names; the reference describes each


def build(config: Optional[dict[str, Any]] = None):
    """A randomly initialised max-of-4 bridge (uses torch's global RNG), biases zero and frozen."""
    # Imported here: reading the checkpoint's weights (weights_from_checkpoint) needs no TransformerLens.
    from mechinterp_edu.models.native import boot_native_bridge, zero_and_freeze_biases

    model = boot_native_bridge(dict(config or CONFIG))
    return zero_and_freeze_biases(model)


def untrained_model():
    """The untrained baseline the lesson, its facts and the proofs CLI compare with: CONFIG's
    model as built after ``torch.manual_seed(0)``."""
    torch.manual_seed(0)
    return build(CONFIG)


def random_tokens(generator: torch.Generator, batch: int, n_ctx: int, d_vocab: int) -> torch.Tensor:
    """[batch, n_ctx] uniform tokens from a CPU generator."""
    return torch.randint(0, d_vocab, (batch, n_ctx), generator=generator)


def targets(tokens: torch.Tensor, bugs: Iterable[str] = ()) -> torch.Tensor:
    """The label at the last position: the max token (or, with the bug, the last token)."""
    return tokens[:, -1] if "last_token_target" in set(bugs) else tokens.max(dim=-1).values


def _forward_last(model, tokens: torch.Tensor, bugs: frozenset[str]) -> torch.Tensor:
    if "sqrt_d_multiplier" in bugs:
        # The model divides q . k by sqrt(d_head); scaling q by score_scale * sqrt(d_head) (= d_head)
        # makes the score q . k * score_scale: the training bug, defined once in the reference.
        factor = bug_lab.score_scale(model.cfg.d_head, bugs) * math.sqrt(model.cfg.d_head)

        def scale_q(q, hook):
            return q * factor

        return model.run_with_hooks(tokens, fwd_hooks=[("blocks.0.attn.hook_q", scale_q)])[:, -1]
    return model(tokens)[:, -1]


def train(steps: Optional[int] = None, device: torch.device | str | None = None, progress: bool = True,
          *, bugs: Iterable[str] = (), seed: Optional[int] = None, evaluate_model: bool = True,
          **overrides: Any) -> TrainResult:
    """Train max_of_4 from the exact recipe (``steps=None``: the full 3000 steps).

    ``bugs``: any of ``TRAINING_BUGS`` (bug lab). ``overrides``: other RECIPE keys
    (batch_size, lr, weight_decay, data_seed) for experiments; the checkpoint uses none.
    """
    from mechinterp_edu.device import get_device

    bugs = frozenset(bugs)
    unknown = bugs - set(TRAINING_BUGS)
    if unknown:
        raise ValueError(f"Unknown training bug(s) {sorted(unknown)}; known: {list(TRAINING_BUGS)}.")
    bad = set(overrides) - set(RECIPE)
    if bad:
        raise ValueError(f"Unknown recipe setting(s) {sorted(bad)}; known: {sorted(RECIPE)}.")
    recipe = dict(RECIPE, **overrides)
    if steps is not None:
        if steps < 0:
            raise ValueError(f"steps must be >= 0, got {steps}.")
        recipe["steps"] = int(steps)
    if seed is not None:
        recipe["seed"] = int(seed)
    recipe["target"] = "last token" if "last_token_target" in bugs else "max"
    recipe["bugs"] = tuple(sorted(bugs))
    device = torch.device(device) if device is not None else get_device()

    previous_threads = torch.get_num_threads()
    if device.type == "cpu" and recipe["cpu_threads"]:
        torch.set_num_threads(int(recipe["cpu_threads"]))
    try:
        model, train_seconds = _train_loop(recipe, bugs, device, progress)
    finally:
        torch.set_num_threads(previous_threads)
    metrics: dict[str, float] = {"train_seconds": train_seconds}
    if evaluate_model:
        metrics = {**evaluate(model), **metrics}
    recipe["betas"] = list(recipe["betas"])
    recipe["bugs"] = list(recipe["bugs"])
    recipe["device"] = str(device)
    return TrainResult(model=model, metrics=metrics, recipe=recipe)


def _train_loop(recipe: dict[str, Any], bugs: frozenset[str], device: torch.device, progress: bool):
    torch.manual_seed(recipe["seed"])
    model = build(CONFIG).to(device)
    model.train()
    params = [p for p in model.parameters() if p.requires_grad]
    optimizer = torch.optim.AdamW(params, lr=recipe["lr"], betas=tuple(recipe["betas"]),
                                  weight_decay=recipe["weight_decay"])
    generator = torch.Generator().manual_seed(recipe["data_seed"])
    n_ctx, d_vocab = CONFIG["n_ctx"], CONFIG["d_vocab"]

    bar = None
    if progress:
        from tqdm.auto import tqdm
        bar = tqdm(total=recipe["steps"], desc=f"train {NAME}", unit="step")
    start = time.perf_counter()
    loss_value = float("nan")
    for step in range(recipe["steps"]):
        tokens = random_tokens(generator, recipe["batch_size"], n_ctx, d_vocab).to(device)
        logits = _forward_last(model, tokens, bugs)
        loss = torch.nn.functional.cross_entropy(logits, targets(tokens, bugs))
        optimizer.zero_grad(set_to_none=True)
        loss.backward()
        optimizer.step()
        if bar is not None and (step % 50 == 0 or step == recipe["steps"] - 1):
            loss_value = loss.item()
            bar.set_postfix(loss=f"{loss_value:.4f}")
            bar.update(step + 1 - bar.n)
    if bar is not None:
        bar.close()
    model.eval()
    return model, time.perf_counter() - start


def weights_from_checkpoint(dtype: torch.dtype = torch.float32, path=None) -> dict[str, torch.Tensor]:
    """The shipped weights in lesson 4's shapes (W_Q, W_K, W_V [d_model, d_head], W_O [d_head,
    d_model], head axis removed), read from the checkpoint without building a bridge.

    The bridge's Linear layers store [out, in] matrices, so each is transposed; a test checks
    the result against ``layer_weights`` of the loaded bridge.
    """
    from mechinterp_edu.models.checkpoint_weights import attn_only_weights
    from mechinterp_edu.models.zoo import CheckpointError

    weights = attn_only_weights(NAME, dtype=dtype, path=path)
    for key in ("b_Q", "b_K", "b_V", "b_O", "b_U"):
        if weights[key].abs().max().item() != 0.0:
            raise CheckpointError(f"{key} is not zero in the {NAME} checkpoint; rebuild it with "
                                  f"`python -m mechinterp_edu train {NAME}`.")
    out = {k: weights[k] for k in ("W_E", "W_pos", "W_U")}
    out.update({k: weights[k][0] for k in ("W_Q", "W_K", "W_V", "W_O")})   # the single head
    return {k: v.to(dtype).contiguous() for k, v in out.items()}


def evaluate(model) -> dict[str, float]:
    """Brute-force accuracy over all d_vocab ** n_ctx inputs, sigma1/sigma2 of EQKE, and
    |correlation| of EQKE's size direction with the token index (all computed fresh)."""
    c = ref.circuits_of(model, dtype=torch.float64)
    result = ref.brute_force(c, device=c.EQKE.device)
    ratio, _, _ = ref.eqke_rank_one(c.EQKE)
    return {
        "accuracy": result.accuracy,
        "n_wrong": float(result.n_wrong),
        "sigma_ratio": ratio,
        "size_direction_abs_corr": abs(ref.size_direction_correlation(c.EQKE)),
        "brute_force_seconds": result.seconds,
    }


SPEC = register(ModelSpec(
    name=NAME,
    description="max-of-4: 1 layer, 1 head, attention-only, no LayerNorm, zero biases, "
                "d_vocab 64, d_model = d_head = 32, n_ctx 4; outputs the max token at the last position",
    lessons=(4,),
    config=CONFIG,
    build=build,
    train=train,
    evaluate=evaluate,
    headline_metric="accuracy",
    extra={"recipe": RECIPE, "training_bugs": TRAINING_BUGS, "chance": 1 / 64,
           "sqrt_d_head": math.sqrt(CONFIG["d_head"])},
))
