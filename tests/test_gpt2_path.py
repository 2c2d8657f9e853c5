"""The GPT-2 loading path, tested on small random GPT-2-architecture models built locally.

* build_bridge_from_module gives a bridge whose logits equal Hugging Face's;
* compatibility mode folds LayerNorm, centres the writing weights and the unembedding, and keeps
  the logits up to a constant per row;
* the hub path fails here with one clear sentence (quickly, without touching the network) and
  the lesson falls back to the toy;
* the lesson's decompositions add up to the model's real score (from hook_q and hook_k) within
  1e-4 for several heads and prompts, on the toy and on a random GPT-2.
"""
from __future__ import annotations

import contextlib
import io
import math
import time

import pytest
import torch

from mechinterp_edu.models import gpt2
from mechinterp_edu.lessons.ioi_scores import reference as ref
from mechinterp_edu.lessons.ioi_scores.data import WordVocab, build_vocab, encode_prompts, sample_prompts

SIZES = dict(n_layers=3, n_heads=4, d_model=32, d_vocab=len(build_vocab()), n_ctx=20)


@pytest.fixture
def hf_model():
    """A fresh module per test: compatibility mode rewrites the wrapped module's weights in place."""
    return gpt2.make_random_gpt2_hf(seed=3, **SIZES)


@pytest.fixture(scope="module")
def tokens():
    return torch.randint(0, SIZES["d_vocab"], (3, 11), generator=torch.Generator().manual_seed(0))


@pytest.fixture(scope="module")
def batch():
    return encode_prompts(sample_prompts(12, "test", seed=2), WordVocab(build_vocab()))


def _quiet(fn, *args, **kwargs):
    with contextlib.redirect_stdout(io.StringIO()):
        return fn(*args, **kwargs)


def test_bridge_logits_equal_hugging_face(hf_model, tokens):
    bridge = gpt2.wrap_gpt2(hf_model, compat=False)
    with torch.no_grad():
        expected = hf_model(tokens).logits
        got = bridge(tokens)
    assert got.shape == expected.shape
    assert torch.allclose(got, expected, atol=1e-5, rtol=0)


def test_compat_mode_folds_layernorm_and_centres(hf_model, tokens):
    with torch.no_grad():
        expected = hf_model(tokens).logits          # before wrapping: folding edits the module
    bridge = gpt2.wrap_gpt2(hf_model, compat=True)
    state = bridge.state_dict()
    # LayerNorm gains and biases were folded away into the weights that read from them.
    for name, value in state.items():
        if ".ln" in name or name.startswith("ln_final"):
            target = torch.ones_like(value) if name.endswith("weight") else torch.zeros_like(value)
            assert torch.allclose(value, target), f"{name} was not folded"
    # The scrambled model's LayerNorms were not trivial, so folding really changed W_Q.
    raw = gpt2.wrap_gpt2(gpt2.make_random_gpt2_hf(seed=3, **SIZES), compat=False)
    assert not torch.allclose(raw.W_Q, bridge.W_Q, atol=1e-3)
    # Writing weights and the unembedding are centred over d_model.
    assert bridge.W_E.mean(-1).abs().max() < 1e-6
    assert bridge.W_pos.mean(-1).abs().max() < 1e-6
    assert bridge.W_O.mean(-1).abs().max() < 1e-6
    assert bridge.W_U.mean(-1).abs().max() < 1e-6
    assert bridge.W_Q.shape == (SIZES["n_layers"], SIZES["n_heads"], SIZES["d_model"],
                                SIZES["d_model"] // SIZES["n_heads"])
    with torch.no_grad():
        got = bridge(tokens)
    diff = got - expected
    per_row = diff - diff.mean(-1, keepdim=True)
    assert per_row.abs().max() < 1e-4, "compat mode changed the logits beyond a constant per row"
    assert diff.abs().max() > 1e-3, "the centred unembedding should shift the logits (test has teeth)"


def test_folded_query_formula_and_real_scores_from_hooks(tokens):
    model = gpt2.make_random_gpt2(seed=5, dtype=torch.float64, **SIZES)
    with torch.no_grad():
        _, cache = model.run_with_cache(tokens)
    for layer in range(SIZES["n_layers"]):
        x = cache[f"blocks.{layer}.hook_resid_pre"]
        scale = cache[f"blocks.{layer}.ln1.hook_scale"]
        normalized = (x - x.mean(-1, keepdim=True)) / scale
        q = torch.einsum("bpd,hde->bphe", normalized, model.W_Q[layer]) + model.b_Q[layer]
        k = torch.einsum("bpd,hde->bphe", normalized, model.W_K[layer]) + model.b_K[layer]
        assert torch.allclose(q, cache[f"blocks.{layer}.attn.hook_q"], atol=1e-10)
        assert torch.allclose(k, cache[f"blocks.{layer}.attn.hook_k"], atol=1e-10)
        # On GPT-2 bridges hook_attn_scores holds the real (scaled, masked) pre-softmax scores.
        scores = torch.einsum("bqhe,bkhe->bhqk", q, k) / math.sqrt(q.shape[-1])
        hooked = cache[f"blocks.{layer}.attn.hook_attn_scores"]
        n = tokens.shape[1]
        causal = torch.tril(torch.ones(n, n, dtype=torch.bool))
        assert torch.allclose(hooked[..., causal], scores[..., causal], atol=1e-10)
        assert torch.isinf(hooked[..., ~causal]).all()


def test_hub_path_fails_here_with_one_sentence_and_quickly(monkeypatch):
    monkeypatch.delenv(gpt2.ALLOW_DOWNLOAD_ENV, raising=False)
    gpt2._GPT2_CACHE.clear()
    start = time.perf_counter()
    with pytest.raises(gpt2.GPT2Unavailable) as info:
        gpt2.load_gpt2_small(device="cpu")
    assert time.perf_counter() - start < 5, "checking for GPT-2 must not wait on the network"
    message = str(info.value)
    assert "\n" not in message
    assert message.startswith("GPT-2 small cannot be loaded here")
    assert message.endswith("so this lesson uses the IOI toy model ioi_small instead.")
    # The failure is remembered: a second call does not try again.
    with pytest.raises(gpt2.GPT2Unavailable):
        gpt2.load_gpt2_small(device="cpu")
    gpt2._GPT2_CACHE.clear()


def test_boot_is_attempted_offline_when_weights_seem_cached(monkeypatch):
    """Even when the cache check says yes, the hub is read in offline mode: a missing file is one
    sentence, not a minute of network retries, and the offline flag is restored afterwards."""
    from huggingface_hub import constants

    monkeypatch.setattr(gpt2, "_weights_in_local_cache", lambda name="gpt2": True)
    monkeypatch.delenv(gpt2.ALLOW_DOWNLOAD_ENV, raising=False)
    gpt2._GPT2_CACHE.clear()
    before = constants.HF_HUB_OFFLINE
    start = time.perf_counter()
    with pytest.raises(gpt2.GPT2Unavailable) as info:
        gpt2.load_gpt2_small(device="cpu")
    assert time.perf_counter() - start < 10
    assert constants.HF_HUB_OFFLINE == before
    assert "loading it failed" in str(info.value) and "\n" not in str(info.value)
    gpt2._GPT2_CACHE.clear()


def test_lesson_falls_back_to_the_toy_with_the_sentence(monkeypatch):
    from mechinterp_edu.lessons.ioi_scores import charts as live

    monkeypatch.delenv(gpt2.ALLOW_DOWNLOAD_ENV, raising=False)
    gpt2._GPT2_CACHE.clear()
    live._model.cache_clear()
    model, note = live._model("gpt2_small")
    assert getattr(model, "zoo_name", None) == "ioi_small"
    assert note.startswith("GPT-2 small cannot be loaded here") and note.count("\n") == 0
    out = live.model_status({"model": "gpt2_small", "batch": 8})
    assert note in out[0]
    live._model.cache_clear()
    gpt2._GPT2_CACHE.clear()


def _check_sums(model, batch, heads, targets=("IO", "S2"), tol=1e-4):
    cache = ref.run_with_cache(model, batch.tokens)
    worst = 0.0
    for layer, head in heads:
        for target in targets:
            inp = ref.gather_head_inputs(model, batch, layer, head, target=target, cache=cache)
            # the pieces really are the residual stream the model used
            assert torch.allclose(inp.k_components.sum(1), inp.extras["resid_k"], atol=1e-4)
            assert torch.allclose(inp.q_components.sum(1), inp.extras["resid_end"], atol=1e-4)
            err = ref.max_sum_error(inp)
            assert err < tol, f"head {layer}.{head}, target {target}: decomposition off by {err}"
            worst = max(worst, err)
    return worst


@pytest.mark.parametrize("dtype,tol", [(torch.float32, 1e-4), (torch.float64, 1e-9)])
def test_decompositions_add_up_on_random_gpt2(batch, dtype, tol):
    model = gpt2.make_random_gpt2(seed=11, dtype=dtype, **SIZES)
    _check_sums(model, batch, [(0, 1), (1, 0), (2, 3), (2, 1)], tol=tol)


@pytest.mark.parametrize("dtype,tol", [(torch.float32, 1e-4), (torch.float64, 1e-9)])
def test_decompositions_add_up_on_the_toy(batch, dtype, tol):
    from mechinterp_edu.models.zoo import load_model

    model = _quiet(load_model, "ioi_small", device="cpu", dtype=dtype)
    _check_sums(model, encode_prompts(sample_prompts(16, "test", seed=4), model.ioi_vocab),
                [(0, 2), (1, 0), (2, 1), (2, 2)], tol=tol)


def test_biases_do_not_cancel_on_a_gpt2_with_real_biases(batch):
    """On a random GPT-2 with non-zero biases: the baseline cancels the b_K term exactly, but not
    the b_O component, the positional embedding, or the query side's b_Q term."""
    model = gpt2.make_random_gpt2(seed=11, dtype=torch.float64, **SIZES)
    inp = ref.gather_head_inputs(model, batch, 2, 1)
    parts = ref.decompose_all(inp)
    assert parts["keys_raw"][:, -1].abs().max() > 1e-3
    assert parts["keys_base"][:, -1].abs().max() == 0
    b_o = inp.labels.index("b_O (all layers)")
    pos = inp.labels.index("pos_embed")
    assert parts["keys_base"][:, b_o].abs().max() > 1e-4
    assert parts["keys_base"][:, pos].abs().max() > 1e-4
    assert parts["queries_base"][:, -1].abs().max() > 1e-4
