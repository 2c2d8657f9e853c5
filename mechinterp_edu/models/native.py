"""Helpers to build TL-native toy bridges (``TransformerBridge.boot_native``)."""
from __future__ import annotations

from typing import Any

import torch
from transformer_lens.config import TransformerBridgeConfig
from transformer_lens.model_bridge import TransformerBridge


def boot_native_bridge(config: dict[str, Any]) -> TransformerBridge:
    """A randomly initialised TL-native bridge from a plain config dict."""
    return TransformerBridge.boot_native(TransformerBridgeConfig(**config))


def zero_and_freeze_biases(model: TransformerBridge) -> TransformerBridge:
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
