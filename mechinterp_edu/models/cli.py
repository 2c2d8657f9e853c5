"""``train`` and ``models`` commands."""
from __future__ import annotations

import time

from mechinterp_edu.device import describe_device, get_device
from mechinterp_edu.models.zoo import model_names, get_spec, read_checkpoint, save_checkpoint


def models_command(args) -> int:
    for name in model_names():
        spec = get_spec(name)
        try:
            payload = read_checkpoint(name)
            metrics = ", ".join(f"{k}={v:.4g}" for k, v in payload.get("metrics", {}).items())
            size = spec.checkpoint_path.stat().st_size / 1e6
            status = f"{size:.2f} MB; {metrics}"
        except RuntimeError as exc:
            status = f"checkpoint problem: {exc}"
        print(f"{name:14s} lessons {','.join(map(str, spec.lessons)):6s} {spec.description}\n{'':14s} {status}")
    return 0


def train_command(args) -> int:
    if not args.name:
        print("Models you can train: " + ", ".join(model_names()))
        print("Usage: python -m mechinterp_edu train NAME [--steps N] [--out PATH] [--no-save]")
        return 0
    spec = get_spec(args.name)
    device = get_device()
    print(f"Training {spec.name} on {describe_device(device)} ...")
    start = time.perf_counter()
    result = spec.train(steps=args.steps, device=device, progress=True)
    seconds = time.perf_counter() - start
    metrics = ", ".join(f"{k} = {v:.6g}" for k, v in result.metrics.items())
    print(f"Done in {seconds:.1f} s. {metrics}")
    if not args.no_save:
        path = save_checkpoint(spec, result, args.out)
        print(f"Wrote {path} ({path.stat().st_size / 1e6:.2f} MB).")
    return 0
