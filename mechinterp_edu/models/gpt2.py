"""GPT-2 small through the real loading path, and small random GPT-2-architecture models.

* :func:`load_gpt2_small` boots GPT-2 small with ``TransformerBridge.boot_transformers("gpt2")``
  and turns on compatibility mode (LayerNorm folded into the next weights, writing weights
  centred, unembedding centred). Nothing downloads at run time: the weights must already be in
  the local Hugging Face cache, unless ``MECHINTERP_EDU_ALLOW_DOWNLOAD=1`` lets the hub be used.
  When they cannot be reached, :class:`GPT2Unavailable` carries one sentence saying so, and
  callers use the toy model ``ioi_small`` instead.
* :func:`make_random_gpt2` builds the *same* path on a small randomly initialised
  ``GPT2LMHeadModel`` (``build_bridge_from_module`` + compatibility mode), so tests exercise the
  GPT-2 code path without the hub. Its LayerNorm gains/biases and all biases are randomised
  too (by default), so folding and every bias term are actually tested.
"""
from __future__ import annotations

import os
from typing import Any, Optional

import torch

from mechinterp_edu.device import get_device

ALLOW_DOWNLOAD_ENV = "MECHINTERP_EDU_ALLOW_DOWNLOAD"
GPT2_NAME = "gpt2"


class GPT2Unavailable(RuntimeError):
    """GPT-2 small cannot be loaded here; ``str(exc)`` is one sentence for the learner."""


def unavailable_sentence(reason: str) -> str:
    return (f"GPT-2 small cannot be loaded here ({reason}), so this lesson uses the IOI toy "
            f"model ioi_small instead.")


def _weights_in_local_cache(name: str = GPT2_NAME) -> bool:
    try:
        from huggingface_hub import try_to_load_from_cache
    except ImportError:  # pragma: no cover - huggingface_hub ships with transformers
        return False
    if not isinstance(try_to_load_from_cache(name, "config.json"), str):
        return False
    return any(isinstance(try_to_load_from_cache(name, f), str)
               for f in ("model.safetensors", "pytorch_model.bin"))


def _allow_download() -> bool:
    return os.environ.get(ALLOW_DOWNLOAD_ENV, "").strip().lower() in ("1", "true", "yes")


_GPT2_CACHE: dict[Any, Any] = {}


def load_gpt2_small(device: torch.device | str | None = None, dtype: torch.dtype = torch.float32,
                    allow_download: Optional[bool] = None):
    """GPT-2 small as a TransformerBridge in compatibility mode, or :class:`GPT2Unavailable`.

    The result (success or failure) is remembered for the process, so pages do not retry.
    """
    allow = _allow_download() if allow_download is None else allow_download
    device = torch.device(device) if device is not None else get_device()
    key = (str(device), dtype, allow)
    if key in _GPT2_CACHE:
        value = _GPT2_CACHE[key]
        if isinstance(value, GPT2Unavailable):
            raise value
        return value
    try:
        model = _boot_gpt2(device, dtype, allow)
    except GPT2Unavailable as exc:
        _GPT2_CACHE[key] = exc
        raise
    _GPT2_CACHE[key] = model
    return model


def _boot_gpt2(device: torch.device, dtype: torch.dtype, allow: bool):
    if not allow and not _weights_in_local_cache():
        raise GPT2Unavailable(unavailable_sentence(
            f"its weights are not in the local Hugging Face cache; {ALLOW_DOWNLOAD_ENV}=1 fetches "
            "them where the hub is reachable"))
    from huggingface_hub import constants as hub_constants
    from transformer_lens.model_bridge import TransformerBridge

    offline_before = hub_constants.HF_HUB_OFFLINE
    if not allow:
        hub_constants.HF_HUB_OFFLINE = True  # read the cache, never the network
    try:
        model = TransformerBridge.boot_transformers(GPT2_NAME, device=device, dtype=dtype)
        model.enable_compatibility_mode(disable_warnings=True)
    except Exception as exc:  # the hub raises OSError, ValueError, HTTP errors...
        first = (str(exc).splitlines() or [type(exc).__name__])[0].rstrip(".")
        raise GPT2Unavailable(unavailable_sentence(f"loading it failed: {first}")) from None
    finally:
        hub_constants.HF_HUB_OFFLINE = offline_before
    model.eval()
    model.zoo_name = "gpt2_small"
    return model


def gpt2_encode_word(model):
    """``encode_word(" Mary") -> [ids]`` for GPT-2's tokenizer (used by ioi_data.encode_with_tokenizer)."""
    tokenizer = model.tokenizer
    return lambda text: tokenizer.encode(text, add_special_tokens=False)


# --------------------------------------------------------------------------- random small GPT-2
def random_gpt2_config(n_layers: int = 2, n_heads: int = 4, d_model: int = 64, d_vocab: int = 117,
                       n_ctx: int = 32, d_mlp: Optional[int] = None):
    from transformers import GPT2Config

    if d_model % n_heads:
        raise ValueError(f"d_model ({d_model}) must be a multiple of n_heads ({n_heads}).")
    return GPT2Config(vocab_size=d_vocab, n_positions=n_ctx, n_embd=d_model, n_layer=n_layers,
                      n_head=n_heads, n_inner=d_mlp or 4 * d_model, activation_function="gelu_new",
                      resid_pdrop=0.0, embd_pdrop=0.0, attn_pdrop=0.0,
                      bos_token_id=0, eos_token_id=0, tie_word_embeddings=True)


def make_random_gpt2_hf(seed: int = 0, scramble: bool = True, **sizes):
    """A randomly initialised ``GPT2LMHeadModel`` (eval mode).

    ``scramble=True`` also randomises LayerNorm gains and biases and every linear bias (GPT-2's
    own initialisation sets them to 1 and 0, which would make folding and bias terms trivial).
    """
    from transformers import GPT2LMHeadModel

    config = random_gpt2_config(**sizes)
    generator = torch.Generator().manual_seed(seed)
    torch.manual_seed(seed)
    model = GPT2LMHeadModel(config).eval()
    if scramble:
        with torch.no_grad():
            for name, param in model.named_parameters():
                if ".ln_" in name or name.startswith("transformer.ln_f"):
                    base = 1.0 if name.endswith("weight") else 0.0
                    param.copy_(base + 0.3 * torch.randn(param.shape, generator=generator))
                elif name.endswith("bias"):
                    param.copy_(0.1 * torch.randn(param.shape, generator=generator))
    return model


def wrap_gpt2(hf_model, compat: bool = True):
    """Wrap a ``GPT2LMHeadModel`` as a TransformerBridge; ``compat`` turns on compatibility mode.

    Compatibility mode rewrites the wrapped module's own weights (folded, centred), so the
    module passed in computes the folded model afterwards.
    """
    from transformer_lens.model_bridge.sources import build_bridge_from_module

    bridge = build_bridge_from_module(hf_model, "GPT2LMHeadModel", hf_config=hf_model.config)
    if compat:
        bridge.enable_compatibility_mode(disable_warnings=True)
    bridge.eval()
    return bridge


def make_random_gpt2(seed: int = 0, compat: bool = True, scramble: bool = True,
                     dtype: torch.dtype = torch.float32, device: torch.device | str | None = None,
                     **sizes):
    """A small random GPT-2-architecture TransformerBridge (compatibility mode by default).

    ``sizes``: n_layers, n_heads, d_model, d_vocab, n_ctx, d_mlp (see :func:`random_gpt2_config`).
    """
    bridge = wrap_gpt2(make_random_gpt2_hf(seed=seed, scramble=scramble, **sizes), compat=compat)
    bridge = bridge.to(device or "cpu").to(dtype)
    bridge.zoo_name = "random_gpt2"
    return bridge
