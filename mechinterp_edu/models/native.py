"""Helpers to build TL-native toy bridges (``TransformerBridge.boot_native``)."""
from __future__ import annotations

from typing import Any

import torch

# TransformerLens is imported inside the functions: importing a recipe module (for its
# vocabulary, say) must stay cheap; only building a model pays for TransformerLens.


def boot_native_bridge(config: dict[str, Any]):
    """A randomly initialised TL-native bridge (TransformerBridge) from a plain config dict."""
    from transformer_lens.config import TransformerBridgeConfig
    from transformer_lens.model_bridge import TransformerBridge

    return TransformerBridge.boot_native(TransformerBridgeConfig(**config))


def zero_and_freeze_biases(model):
    """Set every bias to zero and stop its gradient (for "no biases" toy models).

    TL-native attention layers always carry bias parameters; a model described as
    having no biases keeps them at exactly zero through training.
    """
    with torch.no_grad():
        for name, param in model.named_parameters():
            if name.endswith("bias"):
                param.zero_()
                param.requires_grad_(False)
    return model
