"""The trained ``ioi_small`` model as a plain-torch GPT-2 forward pass (no TransformerLens).

Grading lesson 5 needs real activations of the toy model (residual components, LayerNorm
scales, q and k of one head), not a model object; building the ``TransformerBridge`` costs a
``transformers`` + ``transformer_lens`` import (seconds). :func:`load` reads the shipped
checkpoint into TransformerLens-shaped weights and :meth:`IOIForward.run_with_cache` runs the
same computation as the bridge, returning a dict keyed by the bridge's hook names, so
``reference.ioi_scores.gather_head_inputs`` works on it unchanged.

The checkpoint holds the bridge's *compatibility-mode* state dict: LayerNorm folded into the
next weights (every ``ln*.weight`` is 1 and every ``ln*.bias`` 0, so LayerNorm only centres
and divides by its scale), writing weights and the unembedding centred. Layouts, checked
against the bridge's own ``W_Q``... properties in ``tests/test_ioi_forward.py``::

    attn.q/k/v.weight  [h*d_head, d_model] (nn.Linear, out x in) -> W_Q [h, d_model, d_head]
    attn.o.weight      [h*d_head, d_model] (HF Conv1D, in x out) -> W_O [h, d_head, d_model]
    mlp.in.weight      [d_model, d_mlp]    (Conv1D)              =  W_in
    mlp.out.weight     [d_mlp, d_model]    (Conv1D)              =  W_out
    unembed.weight     [d_vocab, d_model]                        -> W_U [d_model, d_vocab]

A checkpoint that does not have exactly this form raises :class:`UnsupportedCheckpoint`;
callers then fall back to the bridge (``zoo.load_model``).

Per layer, with ``LN(x) = (x - mean x) / sqrt(mean((x - mean x)^2) + eps)``::

    q, k, v = LN(x) W_Q + b_Q, ...          scores = q . k / sqrt(d_head), causal
    z       = softmax(scores) v             attn_out = sum_h z_h W_O[h] + b_O
    mlp_out = gelu_new(LN(x_mid) W_in + b_in) W_out + b_out
"""
from __future__ import annotations

import math
from pathlib import Path
from types import SimpleNamespace
from typing import Iterator, Optional

import torch

from mechinterp_edu.models.zoo import CheckpointError, read_checkpoint
from mechinterp_edu.lessons.ioi_scores.data import WordVocab

NAME = "ioi_small"
EPS = 1e-5  # GPT-2's layer_norm_epsilon, as in the bridge's cfg.eps


class UnsupportedCheckpoint(CheckpointError):
    """The checkpoint is readable but not the folded GPT-2 state dict this forward expects."""


def gelu_new(x: torch.Tensor) -> torch.Tensor:
    """GPT-2's tanh approximation of GELU (Hugging Face ``NewGELUActivation``)."""
    return 0.5 * x * (1.0 + torch.tanh(math.sqrt(2.0 / math.pi) * (x + 0.044715 * torch.pow(x, 3.0))))


def ln_scale(x: torch.Tensor, eps: float = EPS) -> tuple[torch.Tensor, torch.Tensor]:
    """Folded LayerNorm: (normalised x, scale [..., 1]), as the bridge's ``hook_scale``."""
    centred = x - x.mean(-1, keepdim=True)
    scale = (centred.pow(2).mean(-1, keepdim=True) + eps).sqrt()
    return centred / scale, scale


class IOIForward:
    """Weights of ``ioi_small`` with TransformerLens names and shapes, and a forward pass.

    Attributes mirror the bridge's: ``cfg`` (n_layers, n_heads, d_model, d_head, d_mlp, n_ctx,
    d_vocab, eps), ``W_E, W_pos, W_Q, W_K, W_V, b_Q, b_K, b_V, W_O, b_O, W_in, b_in, W_out,
    b_out, W_U, b_U`` (per-layer tensors stacked on a leading layer axis), ``ioi_vocab``.
    """

    def __init__(self, weights: dict[str, torch.Tensor], config: dict, metrics: Optional[dict] = None):
        for key, value in weights.items():
            setattr(self, key, value)
        n_layers, n_heads, d_head, d_model = self.W_Q.shape[0], self.W_Q.shape[1], self.W_Q.shape[3], self.W_Q.shape[2]
        self.cfg = SimpleNamespace(n_layers=n_layers, n_heads=n_heads, d_model=d_model, d_head=d_head,
                                   d_mlp=self.W_in.shape[-1], n_ctx=self.W_pos.shape[0],
                                   d_vocab=self.W_E.shape[0], eps=EPS, act_fn=config["act_fn"])
        self.ioi_vocab = WordVocab(config["vocab"])
        self.zoo_name = NAME
        self.zoo_metrics = dict(metrics or {})
        self._names = list(weights)

    def parameters(self) -> Iterator[torch.Tensor]:
        return (getattr(self, name) for name in self._names)

    def __call__(self, tokens: torch.Tensor) -> torch.Tensor:
        return self.run_with_cache(tokens)[0]

    @torch.no_grad()
    def run_with_cache(self, tokens: torch.Tensor) -> tuple[torch.Tensor, dict[str, torch.Tensor]]:
        """logits [b, seq, d_vocab] and a cache keyed by the bridge's hook names."""
        cache: dict[str, torch.Tensor] = {}
        seq = tokens.shape[1]
        if seq > self.cfg.n_ctx:
            raise ValueError(f"ioi_small reads at most {self.cfg.n_ctx} tokens, got {seq}.")
        cache["hook_embed"] = self.W_E[tokens]                                          # [b, s, d]
        cache["hook_pos_embed"] = self.W_pos[:seq].expand_as(cache["hook_embed"])
        x = cache["hook_embed"] + cache["hook_pos_embed"]
        causal = torch.ones(seq, seq, dtype=torch.bool, device=tokens.device).tril()
        for l in range(self.cfg.n_layers):
            h = f"blocks.{l}."
            cache[h + "hook_resid_pre"] = x
            normed, cache[h + "ln1.hook_scale"] = ln_scale(x)
            q = torch.einsum("bsd,hde->bshe", normed, self.W_Q[l]) + self.b_Q[l]
            k = torch.einsum("bsd,hde->bshe", normed, self.W_K[l]) + self.b_K[l]
            v = torch.einsum("bsd,hde->bshe", normed, self.W_V[l]) + self.b_V[l]
            scores = torch.einsum("bqhe,bkhe->bhqk", q, k) / math.sqrt(self.cfg.d_head)
            scores = scores.masked_fill(~causal, float("-inf"))
            pattern = scores.softmax(-1)
            z = torch.einsum("bhqk,bkhe->bqhe", pattern, v)
            attn_out = torch.einsum("bshe,hed->bsd", z, self.W_O[l]) + self.b_O[l]
            cache.update({h + "attn.hook_q": q, h + "attn.hook_k": k, h + "attn.hook_v": v,
                          h + "attn.hook_attn_scores": scores, h + "attn.hook_pattern": pattern,
                          h + "attn.hook_z": z, h + "hook_attn_out": attn_out})
            x = cache[h + "hook_resid_mid"] = x + attn_out
            normed, cache[h + "ln2.hook_scale"] = ln_scale(x)
            pre = normed @ self.W_in[l] + self.b_in[l]
            post = gelu_new(pre)
            mlp_out = post @ self.W_out[l] + self.b_out[l]
            cache.update({h + "mlp.hook_pre": pre, h + "mlp.hook_post": post, h + "hook_mlp_out": mlp_out})
            x = cache[h + "hook_resid_post"] = x + mlp_out
        normed, cache["ln_final.hook_scale"] = ln_scale(x)
        logits = normed @ self.W_U + self.b_U
        return logits, cache


def _expected_shapes(config: dict) -> dict[str, tuple[int, ...]]:
    L, d, m, V, n_ctx = (int(config[k]) for k in ("n_layers", "d_model", "d_mlp", "vocab_size", "n_ctx"))
    shapes: dict[str, tuple[int, ...]] = {"embed.weight": (V, d), "pos_embed.weight": (n_ctx, d),
                                          "ln_final.weight": (d,), "ln_final.bias": (d,),
                                          "unembed.weight": (V, d), "unembed.bias": (V,)}
    for l in range(L):
        b = f"blocks.{l}."
        for p in "qkvo":
            shapes[f"{b}attn.{p}.weight"], shapes[f"{b}attn.{p}.bias"] = (d, d), (d,)
        shapes.update({f"{b}mlp.in.weight": (d, m), f"{b}mlp.in.bias": (m,),
                       f"{b}mlp.out.weight": (m, d), f"{b}mlp.out.bias": (d,)})
        for n in ("ln1", "ln2"):
            shapes[f"{b}{n}.weight"], shapes[f"{b}{n}.bias"] = (d,), (d,)
    return shapes


def check_state_dict(config: dict, state: dict[str, torch.Tensor]) -> None:
    """Raise :class:`UnsupportedCheckpoint` unless ``state`` is the folded GPT-2 state dict."""
    def fail(why: str):
        raise UnsupportedCheckpoint(f"The {NAME} checkpoint is not the folded GPT-2 state dict the "
                                    f"plain-torch forward reads ({why}).")

    try:
        if config.get("architecture") != "GPT2LMHeadModel" or config.get("act_fn") != "gelu_new":
            fail(f"architecture {config.get('architecture')!r}, act_fn {config.get('act_fn')!r}")
        if int(config["d_model"]) % int(config["n_heads"]):
            fail("d_model is not a multiple of n_heads")
        expected = _expected_shapes({**config, "vocab_size": len(config["vocab"])})
    except (AttributeError, KeyError, TypeError, ValueError) as exc:
        fail(f"config: {type(exc).__name__}: {exc}")
    if set(state) != set(expected):
        missing, extra = sorted(set(expected) - set(state)), sorted(set(state) - set(expected))
        fail(f"missing keys {missing[:4]}, unexpected keys {extra[:4]}")
    for key, shape in expected.items():
        if tuple(state[key].shape) != shape:
            fail(f"{key} has shape {tuple(state[key].shape)}, expected {shape}")
    for key in expected:
        if ".ln" in key or key.startswith("ln_final"):
            want = 1.0 if key.endswith("weight") else 0.0
            if not torch.all(state[key] == want):
                fail(f"{key} is not all {want:g}: LayerNorm is not folded")


def weights_from_state_dict(config: dict, state: dict[str, torch.Tensor],
                            dtype: torch.dtype = torch.float32) -> dict[str, torch.Tensor]:
    """TransformerLens-shaped weights (see the module docstring for the layouts)."""
    check_state_dict(config, state)
    L, H = int(config["n_layers"]), int(config["n_heads"])
    e = int(config["d_model"]) // H

    def stack(fn):
        return torch.stack([fn(f"blocks.{l}.") for l in range(L)])

    def heads_in(b, p):                       # Linear [h*e, d] -> [h, d, e]
        return state[f"{b}attn.{p}.weight"].reshape(H, e, -1).transpose(1, 2)

    out = {
        "W_E": state["embed.weight"], "W_pos": state["pos_embed.weight"],
        "W_Q": stack(lambda b: heads_in(b, "q")), "W_K": stack(lambda b: heads_in(b, "k")),
        "W_V": stack(lambda b: heads_in(b, "v")),
        "b_Q": stack(lambda b: state[b + "attn.q.bias"].reshape(H, e)),
        "b_K": stack(lambda b: state[b + "attn.k.bias"].reshape(H, e)),
        "b_V": stack(lambda b: state[b + "attn.v.bias"].reshape(H, e)),
        "W_O": stack(lambda b: state[b + "attn.o.weight"].reshape(H, e, -1)),   # Conv1D [h*e, d]
        "b_O": stack(lambda b: state[b + "attn.o.bias"]),
        "W_in": stack(lambda b: state[b + "mlp.in.weight"]), "b_in": stack(lambda b: state[b + "mlp.in.bias"]),
        "W_out": stack(lambda b: state[b + "mlp.out.weight"]), "b_out": stack(lambda b: state[b + "mlp.out.bias"]),
        "W_U": state["unembed.weight"].T, "b_U": state["unembed.bias"],
    }
    return {k: v.to(dtype).contiguous() for k, v in out.items()}


def load(dtype: torch.dtype = torch.float32, path: Optional[Path] = None) -> IOIForward:
    """The shipped ``ioi_small`` checkpoint as an :class:`IOIForward` on the CPU.

    Raises ``CheckpointError`` (missing or corrupt file) or :class:`UnsupportedCheckpoint`
    (readable, but not the folded GPT-2 state dict described above).
    """
    payload = read_checkpoint(NAME, path)
    config = payload.get("config", {})
    return IOIForward(weights_from_state_dict(config, payload["state_dict"], dtype), config,
                      payload.get("metrics"))
