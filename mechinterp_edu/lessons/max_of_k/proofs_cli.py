"""``python -m mechinterp_edu proofs [--model NAME | --weights FILE] [--json]``.

Runs every proof strategy of lesson 4 on a one-layer, one-head, attention-only model with zero
biases and prints each strategy's bound, FLOPs and seconds on the current device.
"""
from __future__ import annotations

import json
import sys
from pathlib import Path

import torch

from mechinterp_edu.lessons.max_of_k.proofs import WEIGHT_NAMES, Weights, all_proofs


class ProofInputError(ValueError):
    """A model or weights file the proofs cannot take (the message is one sentence)."""


def _squeeze_leading(name: str, t: torch.Tensor, rank: int) -> torch.Tensor:
    while t.dim() > rank and t.shape[0] == 1:
        t = t[0]
    if t.dim() != rank:
        raise ProofInputError(
            f"{name} has shape {tuple(t.shape)}, but a one-layer, one-head model needs a {rank}-D matrix "
            "(a leading layer or head axis of size 1 is allowed).")
    return t


def check_weights(raw: dict, source: str) -> Weights:
    """Validate the seven matrices and return them as float64, head and layer axes removed."""
    if not isinstance(raw, dict):
        raise ProofInputError(f"{source} holds a {type(raw).__name__}, not a dict of the seven matrices "
                              f"{', '.join(WEIGHT_NAMES)}.")
    missing = [k for k in WEIGHT_NAMES if k not in raw]
    if missing:
        raise ProofInputError(f"{source} lacks {', '.join(missing)}; it needs the seven matrices "
                              f"{', '.join(WEIGHT_NAMES)} of a one-layer, one-head attention-only model.")
    w = {}
    for k in WEIGHT_NAMES:
        if not isinstance(raw[k], torch.Tensor) or not raw[k].is_floating_point():
            raise ProofInputError(f"{k} in {source} is not a floating-point tensor.")
        w[k] = _squeeze_leading(k, raw[k].detach().to("cpu", torch.float64), 2)
        if not torch.isfinite(w[k]).all():
            raise ProofInputError(f"{k} in {source} holds NaN or infinite values.")
    V, d = w["W_E"].shape
    n = w["W_pos"].shape[0]
    d_head = w["W_Q"].shape[1]
    expected = {"W_E": (V, d), "W_pos": (n, d), "W_Q": (d, d_head), "W_K": (d, d_head),
                "W_V": (d, d_head), "W_O": (d_head, d), "W_U": (d, V)}
    for k, shape in expected.items():
        if tuple(w[k].shape) != shape:
            raise ProofInputError(
                f"{k} in {source} has shape {tuple(w[k].shape)} but W_E [{V}, {d}] and W_pos [{n}, {d}] "
                f"imply {list(shape)}.")
    for b in ("b_Q", "b_K", "b_V", "b_O", "b_U"):
        if b in raw and isinstance(raw[b], torch.Tensor) and raw[b].abs().max() != 0:
            raise ProofInputError(f"{b} in {source} is not zero; these proofs are for models without biases.")
    return w


def load_weights_file(path: str) -> Weights:
    p = Path(path)
    if not p.is_file():
        raise ProofInputError(f"There is no file {path}; pass a torch.save'd dict of the seven matrices.")
    try:
        raw = torch.load(p, map_location="cpu", weights_only=True)
    except Exception as exc:  # torch raises many exception types for a file it cannot read
        raise ProofInputError(
            f"{path} could not be read by torch.load ({type(exc).__name__}); pass a torch.save'd dict of "
            f"the seven matrices {', '.join(WEIGHT_NAMES)}.") from None
    return check_weights(raw, path)


def model_weights(name: str) -> Weights:
    """A zoo model's seven matrices (float64), or the untrained max-of-4 model for ``untrained``.
    TransformerLens's progress lines go to stderr, so ``--json`` output stays one JSON object."""
    import contextlib

    with contextlib.redirect_stdout(sys.stderr):
        try:
            return _model_weights(name)
        except ProofInputError:
            raise
        except (LookupError, ValueError, OSError) as exc:
            raise ProofInputError(str(exc)) from None


def _model_weights(name: str) -> Weights:
    from mechinterp_edu.lessons.max_of_k.reference import head_weights

    if name == "untrained":
        from mechinterp_edu.lessons.max_of_k.model import untrained_model
        model = untrained_model()
    else:
        from mechinterp_edu.models.zoo import load_model
        model = load_model(name, device="cpu", dtype=torch.float64)
    cfg = model.cfg
    if cfg.n_layers != 1 or cfg.n_heads != 1 or not cfg.attn_only or cfg.normalization_type is not None:
        raise ProofInputError(
            f"Model {name!r} is not a one-layer, one-head, attention-only model without LayerNorm; the "
            "proofs need one (try --model max_of_4).")
    try:
        return head_weights(model, dtype=torch.float64, device="cpu")
    except ValueError as exc:
        raise ProofInputError(f"Model {name!r} cannot be proven: {exc}") from None


def proofs_command(args) -> int:
    from mechinterp_edu.device import get_device

    try:
        if args.weights:
            w, label = load_weights_file(args.weights), str(args.weights)
        else:
            label = args.model or "max_of_4"
            w = model_weights(label)
    except ProofInputError as exc:
        print(f"error: {exc}", file=sys.stderr)
        return 2
    device = get_device()
    w = {k: v.to(device) for k, v in w.items()}
    try:
        results = all_proofs(w)
    except ValueError as exc:                  # e.g. scores too wide for the brute force's exp()
        print(f"error: {exc}", file=sys.stderr)
        return 2
    accuracy = results[0].bound
    if args.json:
        print(json.dumps({"model": label, "accuracy": accuracy,
                          "strategies": [r.as_json() for r in results]}))
        return 0
    V, n = w["W_E"].shape[0], w["W_pos"].shape[0]
    print(f"{label}: d_vocab {V}, n_ctx {n}, {V ** n:,} inputs; accuracy {accuracy:.6%} ({device})")
    print(f"  {'strategy':<38} {'kind':<9} {'bound':>10} {'FLOPs':>16} {'seconds':>9}")
    for r in results:
        print(f"  {r.name:<38} {r.kind:<9} {r.bound:>10.6f} {r.flops:>16,d} {r.seconds:>9.3f}")
    return 0
