"""The bug lab's trained models, shipped as small checkpoints so that no toggle retrains.

Recipe: exactly ``max_of_4``'s (same seeds, optimiser, 3000 steps of 128 sequences) with one or
both training bugs of the lesson's notes switched on: ``last_token_target`` (the label is the
last token) and ``sqrt_d_multiplier`` (scores multiplied by sqrt(d_head) during training).
``python -m mechinterp_edu.lessons.max_of_k.bug_models`` rebuilds all three files (a minute or
two on a CPU); a test retrains one and checks it matches its checkpoint.
"""
from __future__ import annotations

import sys
from pathlib import Path

import torch

CHECKPOINT_DIR = Path(__file__).resolve().parent / "checkpoints"
FORMAT = "mechinterp-edu-bug-lab-v1"
BUG_SETS: tuple[tuple[str, ...], ...] = (("last_token_target",), ("sqrt_d_multiplier",),
                                         ("last_token_target", "sqrt_d_multiplier"))


def _recipe():
    from mechinterp_edu.lessons.max_of_k import model as recipe
    return recipe


def checkpoint_path(bugs) -> Path:
    bugs = tuple(sorted(bugs))
    if bugs not in {tuple(sorted(b)) for b in BUG_SETS}:
        raise ValueError(f"No bug-lab model for training bugs {list(bugs)}; known: {[list(b) for b in BUG_SETS]}.")
    return CHECKPOINT_DIR / f"max_of_4_bug_{'_and_'.join(bugs)}.pt"


def train_bug_model(bugs, device: str = "cpu"):
    """Train the recipe with ``bugs`` (the reproducible recipe of each checkpoint)."""
    return _recipe().train(device=device, progress=False, bugs=tuple(sorted(bugs)), evaluate_model=False)


def save(bugs) -> Path:
    result = train_bug_model(bugs)
    state = {k: v.detach().to("cpu", torch.float32).clone() for k, v in result.model.state_dict().items()}
    path = checkpoint_path(bugs)
    path.parent.mkdir(parents=True, exist_ok=True)
    torch.save({"format": FORMAT, "bugs": sorted(bugs), "recipe": dict(result.recipe), "state_dict": state}, path)
    return path


def load_state(bugs) -> dict[str, torch.Tensor]:
    path = checkpoint_path(bugs)
    if not path.exists():
        raise FileNotFoundError(f"The bug-lab checkpoint {path} is missing; rebuild it with "
                                "`python -m mechinterp_edu.lessons.max_of_k.bug_models`.")
    payload = torch.load(path, map_location="cpu", weights_only=True)
    if not isinstance(payload, dict) or payload.get("format") != FORMAT:
        raise ValueError(f"{path} is not a bug-lab checkpoint; rebuild it with "
                         "`python -m mechinterp_edu.lessons.max_of_k.bug_models`.")
    return payload["state_dict"]


def bug_weights(bugs, dtype: torch.dtype = torch.float64) -> dict[str, torch.Tensor]:
    """The seven matrices (lesson 4's shapes, head axis removed) read from the checkpoint without
    building a bridge: the bridge's Linear layers store [out, in], hence the transposes."""
    state = {k: v.to(dtype) for k, v in load_state(bugs).items()}
    return {"W_E": state["embed.weight"], "W_pos": state["pos_embed.weight"],
            "W_Q": state["blocks.0.attn.q.weight"].T, "W_K": state["blocks.0.attn.k.weight"].T,
            "W_V": state["blocks.0.attn.v.weight"].T, "W_O": state["blocks.0.attn.o.weight"].T,
            "W_U": state["unembed.weight"].T}


def load_bug_model(bugs):
    """The bridge trained with ``bugs``, read from its checkpoint (instant)."""
    recipe = _recipe()
    model = recipe.build(recipe.CONFIG)
    model.load_state_dict(load_state(bugs), strict=True)
    return model.to("cpu").eval()


if __name__ == "__main__":
    torch.set_num_threads(1)
    for bug_set in BUG_SETS:
        print(save(bug_set), file=sys.stderr)
