"""The plain-torch ioi_small forward (models/ioi_forward.py) used by lesson 5's grading cases.

The truth is the TransformerBridge built by ``load_model("ioi_small")``: its own weight
properties, its ``run_with_cache`` activations and logits, and the grading cases the spec
built from it before. Also checked: grading imports neither transformers nor
transformer_lens, gives the worked solutions full marks and the stubs zero, and an
unexpected checkpoint is refused (the spec then falls back to the bridge, visibly).
"""
from __future__ import annotations

import contextlib
import io
import json
import os
import subprocess
import sys
from pathlib import Path

import pytest
import torch

from mechinterp_edu.lessons.ioi_scores import forward as ioi_forward
from mechinterp_edu.models.zoo import read_checkpoint
from mechinterp_edu.lessons.ioi_scores import reference as ref
from mechinterp_edu.lessons.ioi_scores.data import encode_prompts, sample_prompts

REPO = Path(__file__).resolve().parent.parent
DTYPES = (torch.float32, torch.float64)
WEIGHTS = ("W_E", "W_pos", "W_Q", "W_K", "W_V", "b_Q", "b_K", "b_V", "W_O", "b_O",
           "W_in", "b_in", "W_out", "b_out", "W_U", "b_U")


def _bridge(dtype):
    from mechinterp_edu.lessons.ioi_scores.model import load
    with contextlib.redirect_stdout(io.StringIO()):
        return load(device="cpu", dtype=dtype)


@pytest.fixture(scope="module")
def bridges():
    return {dtype: _bridge(dtype) for dtype in DTYPES}


@pytest.fixture(scope="module")
def forwards():
    return {dtype: ioi_forward.load(dtype) for dtype in DTYPES}


def _prompt_sets(vocab):
    """Several prompt sets: three splits (one a held-out template), batch sizes 1..9, a prefix."""
    out = {}
    for split, n, seed in (("test", 9, 5), ("heldout_template", 4, 1), ("train", 1, 3)):
        out[f"{split} x{n}"] = encode_prompts(sample_prompts(n, split, seed=seed), vocab).tokens
    out["test x5, first 7 tokens"] = out["test x9"][:5, :7]
    return out


def _close(got, want, dtype, what, size=None):
    """Within tol x size, size = max(1, max |want|) unless given. tol: 1e-10 in float64; 2e-6 in
    float32 (~16 ulps: the two forwards round differently, e.g. einsum vs nn.Linear)."""
    got, want = got.to(torch.float64), want.to(torch.float64)
    finite = torch.isfinite(want)
    assert torch.equal(finite, torch.isfinite(got)) and torch.equal(got[~finite], want[~finite]), what
    size = size if size is not None else max(1.0, float(want[finite].abs().max()))
    tol = 1e-10 if dtype == torch.float64 else 2e-6
    err = float((got[finite] - want[finite]).abs().max()) if finite.any() else 0.0
    assert err <= tol * size, f"{what}: max |diff| {err:.2e} > {tol * size:.2e}"


@pytest.mark.parametrize("dtype", DTYPES, ids=str)
def test_weights_are_exactly_the_bridges(bridges, forwards, dtype):
    model, fwd = bridges[dtype], forwards[dtype]
    for name in WEIGHTS:
        want = getattr(model, name).detach()
        assert getattr(fwd, name).dtype == dtype
        torch.testing.assert_close(getattr(fwd, name), want, rtol=0, atol=0, msg=name)
    for key in ("n_layers", "n_heads", "d_model", "d_head", "d_mlp", "n_ctx", "d_vocab", "eps"):
        assert getattr(fwd.cfg, key) == getattr(model.cfg, key), key


@pytest.mark.parametrize("dtype", DTYPES, ids=str)
def test_every_activation_and_the_logits_equal_the_bridges(bridges, forwards, dtype):
    model, fwd = bridges[dtype], forwards[dtype]
    needed = {"hook_embed", "hook_pos_embed", "blocks.2.ln1.hook_scale", "blocks.2.attn.hook_q",
              "blocks.2.attn.hook_k", "blocks.1.attn.hook_z", "blocks.0.hook_mlp_out",
              "blocks.2.hook_resid_pre"}
    for label, tokens in _prompt_sets(fwd.ioi_vocab).items():
        with torch.no_grad():
            logits, cache = model.run_with_cache(tokens)
        my_logits, mine = fwd.run_with_cache(tokens)
        assert needed <= set(mine)
        _close(my_logits, logits, dtype, f"{label}: logits")
        for key, value in mine.items():
            assert value.shape == cache[key].shape and value.dtype == dtype, f"{label}: {key}"
            size = None
            if key.endswith("hook_pattern"):   # softmax moves by at most 1/2 x its inputs' error
                size = float(cache[key.replace("pattern", "attn_scores")].nan_to_num(0, 0, 0).abs().max())
            _close(value, cache[key], dtype, f"{label}: {key}", size)
        for l in range(fwd.cfg.n_layers):   # each head's output, hook_z @ W_O
            z = f"blocks.{l}.attn.hook_z"
            _close(torch.einsum("bshe,hed->bshd", mine[z], fwd.W_O[l]),
                   torch.einsum("bshe,hed->bshd", cache[z], model.W_O[l].detach()), dtype,
                   f"{label}: head outputs of layer {l}")


def _toy_cases(spec, source, monkeypatch):
    """Every lesson-5 case built on the trained toy, the toy coming from ``source``."""
    from mechinterp_edu.grader.spec import exercises_for

    monkeypatch.setattr(spec, "_TOY", {})
    monkeypatch.setattr(spec, "_toy_model", source)
    out = {}
    own_toy = {e.name for e in spec.CAUSAL_EXERCISES + spec.NULL_EXERCISES}   # not built from spec._toy_model
    for exercise in exercises_for(5):
        if exercise.name in own_toy:
            continue
        out[exercise.name] = [case for case in exercise.cases() if "trained ioi_small" in case.label]
    return out


def test_grading_cases_equal_the_ones_built_on_the_bridge(monkeypatch):
    import mechinterp_edu.lessons.ioi_scores.grading as spec

    ours = _toy_cases(spec, lambda dtype: ioi_forward.load(dtype), monkeypatch)
    theirs = _toy_cases(spec, _bridge, monkeypatch)
    assert set(ours) == set(theirs) and len(ours) == 10
    for name in ours:
        assert [c.label for c in ours[name]] == [c.label for c in theirs[name]]
        assert len(ours[name]) == 2, "a float32 and a float64 case on the trained toy"
        for a, b in zip(ours[name], theirs[name]):
            assert a.info == b.info, (name, a.label)
            dtype = torch.float64 if "float64" in a.label else torch.float32
            assert len(a.args) == len(b.args)
            for i, (x, y) in enumerate(zip(a.args, b.args)):
                assert x.dtype == y.dtype == dtype and x.shape == y.shape
                _close(x, y, dtype, f"{name} on {a.label}, argument {i}")


def test_head_inputs_equal_the_bridges_field_by_field(bridges, forwards):
    from dataclasses import fields

    for dtype in DTYPES:
        batch = encode_prompts(sample_prompts(8, "test", seed=11), forwards[dtype].ioi_vocab)
        ours = ref.gather_head_inputs(forwards[dtype], batch, 2, 1, dtype=dtype)
        theirs = ref.gather_head_inputs(bridges[dtype], batch, 2, 1, dtype=dtype)
        for f in fields(ours):
            a, b = getattr(ours, f.name), getattr(theirs, f.name)
            pairs = [(f"extras[{k}]", a[k], b[k]) for k in a] if f.name == "extras" else [(f.name, a, b)]
            if f.name == "extras":
                assert a.keys() == b.keys()
            for what, x, y in pairs:
                if torch.is_tensor(x) and x.is_floating_point():
                    _close(x, y, dtype, what)
                elif torch.is_tensor(x):
                    assert torch.equal(x, y), what
                else:
                    assert x == y, what
        assert ref.max_sum_error(ours) < (1e-10 if dtype == torch.float64 else 1e-3)


def test_grading_imports_no_transformers_and_grades_as_before():
    """In a fresh process: the spec's cases come from the plain forward, neither transformers nor
    transformer_lens is imported, the solutions get full marks and the stubs zero."""
    code = (
        "import json, sys\n"
        "from mechinterp_edu.grader.grade import grade_file\n"
        "import mechinterp_edu.lessons.ioi_scores.grading as spec\n"
        "labels = [label for label, _, _ in spec.setups()]\n"
        "sol = grade_file('solutions/05_ioi_scores.py', sandbox=False)\n"
        "stub = grade_file('exercises/05_ioi_scores.py', sandbox=False)\n"
        "mods = sorted(m for m in sys.modules if m.split('.')[0] in ('transformers', 'transformer_lens'))\n"
        "print(json.dumps({'labels': labels, 'source': {str(k): v for k, v in spec.TOY_SOURCE.items()},\n"
        "                  'sol': [sol.score, sol.max_score], 'stub': [stub.score, stub.max_score],\n"
        "                  'mods': mods}))\n"
    )
    env = dict(os.environ, MECHINTERP_EDU_GRADER_CACHE="off")
    out = subprocess.run([sys.executable, "-c", code], cwd=REPO, env=env, capture_output=True,
                         text=True, timeout=300)
    assert out.returncode == 0, out.stderr
    result = json.loads(out.stdout.strip().splitlines()[-1])
    assert result["mods"] == []
    assert result["source"] == {"torch.float32": "ioi_forward", "torch.float64": "ioi_forward"}
    assert sum("trained ioi_small" in label for label in result["labels"]) == 2
    assert result["sol"][0] == result["sol"][1] > 0
    assert result["stub"] == [0, result["sol"][1]]


# --------------------------------------------------------------------------- unexpected checkpoints
def _write(tmp_path, edit):
    payload = read_checkpoint("ioi_small")
    payload = {**payload, "config": dict(payload["config"]), "state_dict": dict(payload["state_dict"])}
    edit(payload)
    path = tmp_path / "ioi_small.pt"
    torch.save(payload, path)
    return path


@pytest.mark.parametrize("edit, match", [
    (lambda p: p["state_dict"].__setitem__("blocks.1.ln1.weight", torch.full((64,), 2.0)), "not folded"),
    (lambda p: p["state_dict"].__setitem__("ln_final.bias", torch.full((64,), 0.1)), "not folded"),
    (lambda p: p["state_dict"].pop("blocks.2.mlp.in.bias"), "missing keys"),
    (lambda p: p["state_dict"].__setitem__("blocks.0.mlp.in.weight", torch.zeros(256, 64)), "shape"),
    (lambda p: p["config"].__setitem__("act_fn", "relu"), "act_fn"),
    (lambda p: p["config"].pop("n_layers"), "config"),
], ids=["ln1 weight", "ln_final bias", "missing key", "transposed W_in", "act_fn", "config"])
def test_an_unexpected_checkpoint_is_refused(tmp_path, edit, match):
    path = _write(tmp_path, edit)
    with pytest.raises(ioi_forward.UnsupportedCheckpoint, match=match):
        ioi_forward.load(torch.float64, path=path)


def test_the_spec_falls_back_to_the_bridge_and_says_so(monkeypatch, forwards):
    import mechinterp_edu.lessons.ioi_scores.grading as spec

    def refuse(dtype=torch.float32, path=None):
        raise ioi_forward.UnsupportedCheckpoint("test: pretend the checkpoint is not folded")

    monkeypatch.setattr(spec, "_TOY", {})
    monkeypatch.setattr(spec, "TOY_SOURCE", {})
    monkeypatch.setattr(ioi_forward, "load", refuse)
    inp = spec.toy_inputs(torch.float64)
    assert inp is not None
    assert spec.TOY_SOURCE[torch.float64].startswith("bridge (test: pretend")
    # and the bridge's inputs are the forward's
    batch = encode_prompts(sample_prompts(spec.TOY_BATCH, "test", seed=5), forwards[torch.float64].ioi_vocab)
    ours = ref.gather_head_inputs(forwards[torch.float64], batch, spec.TOY_LAYER, spec.TOY_HEAD)
    _close(ours.k_components, inp.k_components, torch.float64, "k_components")
    _close(ours.q, inp.q, torch.float64, "q")
