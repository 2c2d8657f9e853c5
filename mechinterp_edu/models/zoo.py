"""Model zoo: toy models shipped as small checkpoints, each with its exact recipe.

A lesson that builds a model lists its recipe(s) as ``MODELS`` (a list of :class:`ModelSpec`)
in its ``model.py``; the zoo finds them through the course map. :func:`load_model` finds the spec by
name, reads the checkpoint shipped in ``mechinterp_edu/models/checkpoints/`` and
returns a TransformerLens 4 ``TransformerBridge`` on the course device.

Checkpoint format (``torch.save`` of plain data, loaded with ``weights_only=True``)::

    {"format": "mechinterp-edu/1", "name": str, "config": dict,
     "state_dict": {str: Tensor}, "metrics": {str: float}, "recipe": dict}
"""
from __future__ import annotations

from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, Callable, Optional

import torch

from mechinterp_edu.atomic import write_atomically
from mechinterp_edu.device import get_device

CHECKPOINT_DIR = Path(__file__).resolve().parent / "checkpoints"
FORMAT = "mechinterp-edu/1"
MAX_CHECKPOINT_BYTES = 5 * 1024 * 1024

class CheckpointError(RuntimeError):
    """A checkpoint is missing or unreadable. The message names the file and the fix."""


class UnknownModelError(LookupError):
    pass


@dataclass
class TrainResult:
    model: Any                      # the trained TransformerBridge
    metrics: dict[str, float]       # e.g. {"accuracy": 0.9995}
    recipe: dict[str, Any]          # the exact hyper-parameters used (seed, steps, lr...)


@dataclass
class ModelSpec:
    """Everything the zoo knows about one toy model.

    build(config_dict) -> TransformerBridge with random weights of the right architecture.
    train(steps=None, device=None, progress=True) -> TrainResult  (steps=None: the full recipe).
    evaluate(model) -> {metric: value}: the metric the checkpoint is judged by.
    """

    name: str
    description: str
    lessons: tuple[int, ...]
    config: dict[str, Any]
    build: Callable[[dict[str, Any]], Any]
    train: Callable[..., TrainResult]
    evaluate: Callable[[Any], dict[str, float]]
    headline_metric: str
    # Optional: turn a model into the state_dict to store (default: model.state_dict()).
    state_dict_of: Optional[Callable[[Any], dict[str, torch.Tensor]]] = None
    extra: dict[str, Any] = field(default_factory=dict)

    @property
    def checkpoint_path(self) -> Path:
        return CHECKPOINT_DIR / f"{self.name}.pt"

    @property
    def rebuild_command(self) -> str:
        return f"python -m mechinterp_edu train {self.name}"


def _specs() -> dict[str, ModelSpec]:
    from mechinterp_edu.course import all_parts
    return {spec.name: spec for spec in all_parts("model")}


def model_names() -> list[str]:
    """Names of every toy model the lessons build, in course order."""
    return list(_specs())


def get_spec(name: str) -> ModelSpec:
    specs = _specs()
    if name not in specs:
        raise UnknownModelError(f"No toy model called {name!r}. Known models: {', '.join(sorted(specs))}.")
    return specs[name]


def list_models() -> list[ModelSpec]:
    return list(_specs().values())


def save_checkpoint(spec: ModelSpec, result: TrainResult, path: Path | None = None) -> Path:
    """Write a trained model as a small checkpoint (weights stored in float32)."""
    path = Path(path or spec.checkpoint_path)
    path.parent.mkdir(parents=True, exist_ok=True)
    state = spec.state_dict_of(result.model) if spec.state_dict_of else result.model.state_dict()
    state = {k: v.detach().to("cpu", torch.float32).clone() for k, v in state.items()}
    payload = {
        "format": FORMAT,
        "name": spec.name,
        "config": dict(spec.config),
        "state_dict": state,
        "metrics": {k: float(v) for k, v in result.metrics.items()},
        "recipe": dict(result.recipe),
    }
    return write_atomically(path, lambda fh: torch.save(payload, fh))


def read_checkpoint(name: str, path: Path | None = None) -> dict[str, Any]:
    """Read a checkpoint's payload, with clear errors for missing or corrupt files."""
    spec = get_spec(name)
    path = Path(path or spec.checkpoint_path)
    if not path.exists():
        raise CheckpointError(
            f"The checkpoint for model {name!r} is missing: {path}. "
            f"Rebuild it with `{spec.rebuild_command}` (or restore it with `git checkout -- {path.name}`)."
        )
    try:
        payload = torch.load(path, map_location="cpu", weights_only=True)
    except Exception as exc:  # torch raises many types for a damaged file
        raise CheckpointError(
            f"The checkpoint for model {name!r} at {path} could not be read ({type(exc).__name__}: "
            f"{str(exc).splitlines()[0] if str(exc) else 'no detail'}). It is probably corrupt or truncated. "
            f"Rebuild it with `{spec.rebuild_command}`."
        ) from None
    if not isinstance(payload, dict) or payload.get("format") != FORMAT or "state_dict" not in payload:
        raise CheckpointError(
            f"The file {path} is not a mechinterp-edu checkpoint (format {FORMAT!r} expected). "
            f"Rebuild it with `{spec.rebuild_command}`."
        )
    return payload


def load_model(name: str, device: torch.device | str | None = None,
               dtype: torch.dtype = torch.float32, path: Path | None = None):
    """Load a shipped toy model as a TransformerBridge on ``device`` (default: the course device).

    >>> model = load_model("max_of_4")          # doctest: +SKIP
    """
    spec = get_spec(name)
    payload = read_checkpoint(name, path)
    model = spec.build(payload["config"])
    try:
        model.load_state_dict(payload["state_dict"], strict=True)
    except RuntimeError as exc:
        raise CheckpointError(
            f"The checkpoint {path or spec.checkpoint_path} does not fit model {name!r} "
            f"({str(exc).splitlines()[0]}). Rebuild it with `{spec.rebuild_command}`."
        ) from None
    model = model.to(device or get_device()).to(dtype)
    model.eval()
    model.zoo_name = name
    model.zoo_metrics = dict(payload.get("metrics", {}))
    return model
