"""Model zoo: ``load_model(name)`` returns a TransformerBridge for a shipped toy model.

See :mod:`mechinterp_edu.models.zoo` for the checkpoint format and
:mod:`mechinterp_edu.models.gpt2` for GPT-2 small (real hub path) and small random
GPT-2-architecture models.
"""
from mechinterp_edu.models.zoo import (  # noqa: F401
    CheckpointError,
    ModelSpec,
    TrainResult,
    UnknownModelError,
    get_spec,
    list_models,
    load_model,
    read_checkpoint,
    model_names,
    save_checkpoint,
)
