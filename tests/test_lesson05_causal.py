"""Lesson 5 causal tools: two implementations agree, self-patching is a no-op, the grader names
each catalogued mistake, and the causal claims the lesson text makes hold on the toy."""
from __future__ import annotations

import contextlib
import re
import io

import pytest
import torch

from mechinterp_edu.course import get_lesson
from mechinterp_edu.lessons.ioi_scores import causal as C

torch.set_num_threads(1)
LESSON = get_lesson(5)
CAUSAL = ("logit_diff", "ablate_head", "patch_head_output")
NULL = ("parallel_share_null",)


@pytest.fixture(scope="module")
def bridge():
    from mechinterp_edu.models.zoo import load_model
    with contextlib.redirect_stdout(io.StringIO()):
        return load_model("ioi_small")


@pytest.fixture(scope="module")
def prompts():
    from mechinterp_edu.lessons.ioi_scores.data import sample_prompts
    return sample_prompts(24, "test", seed=3)


@pytest.fixture(scope="module")
def batches(bridge, prompts):
    from mechinterp_edu.lessons.ioi_scores.data import encode_prompts
    clean = encode_prompts(prompts, bridge.ioi_vocab)
    return {kind: (clean, encode_prompts(C.corrupt_prompts(prompts, kind), bridge.ioi_vocab))
            for kind in ("swap", "replace")}


def _args(b):
    return b.positions["END"], b.io_tokens, b.s_tokens


def test_logit_diff_matches_the_bridges_own_logits(bridge, batches):
    clean, _ = batches["swap"]
    end, io_t, s_t = _args(clean)
    logits = bridge(clean.tokens)
    manual = torch.stack([logits[i, end[i], io_t[i]] - logits[i, end[i], s_t[i]] for i in range(len(clean))])
    assert torch.allclose(C.logit_diff(logits, end, io_t, s_t), manual)
    w = C.weights_of(bridge)
    assert torch.allclose(C.clean_logit_diff(w, clean.tokens, end, io_t, s_t), manual, atol=1e-4)


@pytest.mark.parametrize("layer,head", [(0, 3), (1, 0), (2, 1)])
@pytest.mark.parametrize("mode", ["mean", "zero"])
def test_ablation_agrees_with_hooks_through_the_bridge(bridge, batches, layer, head, mode):
    clean, _ = batches["swap"]
    w = C.weights_of(bridge)
    fast = C.ablate_head(w, clean.tokens, *_args(clean), layer, head, mode)
    hooked = C.ablate_head_hooked(bridge, clean.tokens, *_args(clean), layer, head, mode)
    assert (fast - hooked).abs().max() < 1e-4
    assert (fast - C.head_effects(w, clean.tokens, *_args(clean))[mode][layer, head]).abs().max() < 1e-4
    # an intervention on an exercised head really changes something
    assert (fast - C.clean_logit_diff(w, clean.tokens, *_args(clean))).abs().max() > 1e-3


@pytest.mark.parametrize("kind", ["swap", "replace"])
@pytest.mark.parametrize("layer,head,where", [(0, 3, "S2"), (1, 0, "END"), (2, 1, "END"), (0, 2, "IO")])
def test_patching_agrees_with_hooks_through_the_bridge(bridge, batches, kind, layer, head, where):
    clean, corrupt = batches[kind]
    w = C.weights_of(bridge)
    pos = clean.positions[where]
    fast = C.patch_head_output(w, clean.tokens, corrupt.tokens, *_args(clean), layer, head, pos)
    hooked = C.patch_head_output_hooked(bridge, clean.tokens, corrupt.tokens, *_args(clean), layer, head, pos)
    assert (fast - hooked).abs().max() < 1e-4
    table = C.head_effects(w, clean.tokens, *_args(clean), corrupt.tokens, pos=pos)["patch"]
    assert (fast - table[layer, head]).abs().max() < 1e-4


@pytest.mark.parametrize("layer,head", [(0, 3), (1, 0), (2, 2)])
def test_patching_the_clean_run_into_itself_changes_nothing(bridge, batches, layer, head):
    clean, _ = batches["swap"]
    w = C.weights_of(bridge)
    base = C.clean_logit_diff(w, clean.tokens, *_args(clean))
    for pos in (clean.positions["END"], clean.positions["S2"]):
        same = C.patch_head_output(w, clean.tokens, clean.tokens, *_args(clean), layer, head, pos)
        hooked = C.patch_head_output_hooked(bridge, clean.tokens, clean.tokens, *_args(clean), layer, head, pos)
        assert (same - base).abs().max() < 1e-5 and (hooked - base).abs().max() < 1e-4


@pytest.mark.parametrize("sender,receiver", [((0, 1), (1, 0)), ((1, 0), (2, 2)), ((0, 3), (2, 1))])
def test_path_patching_into_a_query_agrees_with_hooks_and_is_a_no_op_on_the_clean_run(bridge, batches, sender,
                                                                                     receiver):
    clean, corrupt = batches["replace"]
    w = C.weights_of(bridge)
    fast = C.path_patch_query(w, clean.tokens, corrupt.tokens, *_args(clean), sender, receiver)
    hooked = C.path_patch_query_hooked(bridge, clean.tokens, corrupt.tokens, *_args(clean), sender, receiver)
    assert (fast - hooked).abs().max() < 1e-4
    same = C.path_patch_query(w, clean.tokens, clean.tokens, *_args(clean), sender, receiver)
    assert (same - C.clean_logit_diff(w, clean.tokens, *_args(clean))).abs().max() < 1e-5
    # the sender's change really reaches the receiver's query (the edit is not silently dropped)
    _, cache = C.run(w, clean.tokens)
    _, bad = C.run(w, corrupt.tokens)
    rows = torch.arange(len(clean))
    end = clean.positions["END"]
    assert (bad[f"z.{sender[0]}"][rows, end, sender[1]] - cache[f"z.{sender[0]}"][rows, end, sender[1]]).abs().max() > 1e-3
    with pytest.raises(C.CausalInputError, match="earlier layer"):
        C.path_patch_query(w, clean.tokens, corrupt.tokens, *_args(clean), receiver, sender)


def test_swapped_prompt_answers_the_other_name(bridge, batches):
    clean, corrupt = batches["swap"]
    assert torch.equal(corrupt.io_tokens, clean.s_tokens) and torch.equal(corrupt.s_tokens, clean.io_tokens)
    w = C.weights_of(bridge)
    # run on the corrupted prompts, scored with the clean names: the model now prefers S
    assert C.clean_logit_diff(w, corrupt.tokens, *_args(clean)).mean() < -5


def test_bad_head_gives_a_sentence(bridge, batches):
    clean, _ = batches["swap"]
    with pytest.raises(C.CausalInputError, match="does not exist"):
        C.ablate_head(C.weights_of(bridge), clean.tokens, *_args(clean), 5, 0)
    with pytest.raises(C.CausalInputError, match="mode"):
        C.ablate_head(C.weights_of(bridge), clean.tokens, *_args(clean), 0, 0, "median")


# --------------------------------------------------------------------------- grader
def _grade(source: str, exercises):
    from mechinterp_edu.grader.grade import grade_source
    return grade_source(source, 5, exercises=list(exercises), sandbox=False)


def test_solution_full_marks_and_stubs_zero_on_the_causal_exercises():
    report = _grade(LESSON.solution_path.read_text(), CAUSAL + NULL)
    assert report.score == report.max_score > 0, [(r.exercise, r.feedback) for r in report.results]
    stubs = _grade(LESSON.exercise_path.read_text(), CAUSAL + NULL)
    assert stubs.score == 0


_FROZEN_RUN = '''
_FROZEN = []

_run_model_clean = run_model

def run_model(weights, tokens, hook=None, eps=1e-5):
    # WRONG: a run with a hook reuses the LayerNorm scales of the previous run without one
    scales = iter(list(_FROZEN)) if hook is not None else None
    if hook is None:
        _FROZEN.clear()
    def layer_norm(x):
        x = x - x.mean(-1, keepdim=True)
        if scales is None:
            s = (x.pow(2).mean(-1, keepdim=True) + eps).sqrt()
            _FROZEN.append(s)
            return x / s
        return x / next(scales)
    return _forward(weights, tokens, hook, layer_norm)

def _forward(w, tokens, hook, layer_norm):
    seq = tokens.shape[1]
    x = w["W_E"][tokens] + w["W_pos"][:seq]
    mask = torch.ones(seq, seq, dtype=torch.bool).tril()
    zs = []
    for l in range(w["W_Q"].shape[0]):
        h = layer_norm(x)
        q = torch.einsum("bsd,hde->bshe", h, w["W_Q"][l]) + w["b_Q"][l]
        k = torch.einsum("bsd,hde->bshe", h, w["W_K"][l]) + w["b_K"][l]
        v = torch.einsum("bsd,hde->bshe", h, w["W_V"][l]) + w["b_V"][l]
        pattern = (torch.einsum("bqhe,bkhe->bhqk", q, k) / math.sqrt(q.shape[-1])).masked_fill(~mask, float("-inf")).softmax(-1)
        z = torch.einsum("bhqk,bkhe->bqhe", pattern, v)
        if hook is not None:
            new = hook("z", l, z)
            z = z if new is None else new
        zs.append(z)
        x = x + torch.einsum("bshe,hed->bsd", z, w["W_O"][l]) + w["b_O"][l]
        pre = layer_norm(x) @ w["W_in"][l] + w["b_in"][l]
        x = x + 0.5 * pre * (1 + torch.tanh(math.sqrt(2 / math.pi) * (pre + 0.044715 * pre ** 3))) @ w["W_out"][l] + w["b_out"][l]
    return layer_norm(x) @ w["W_U"] + w["b_U"], zs
'''

MISTAKE_EDITS: list[tuple[str, str, str]] = [
    ("logit_diff", "reading the last position instead of END", '''
def logit_diff(logits, end, io, s):
    rows = torch.arange(logits.shape[0])
    return logits[rows, -1, io] - logits[rows, -1, s]
'''),
    ("logit_diff", "S minus IO", '''
def logit_diff(logits, end, io, s):
    rows = torch.arange(logits.shape[0])
    return logits[rows, end, s] - logits[rows, end, io]
'''),
    ("logit_diff", "a difference of probabilities", '''
def logit_diff(logits, end, io, s):
    rows = torch.arange(logits.shape[0])
    p = logits.softmax(-1)
    return p[rows, end, io] - p[rows, end, s]
'''),
    ("ablate_head", "ablating the pattern instead of the output", '''
def ablate_head(weights, tokens, end, io, s, layer, head, mode):
    seen = {}
    def keep(name, l, t):
        if name == "pattern" and l == layer:
            seen["p"] = t[:, head]
    run_model(weights, tokens, keep)
    fill = seen["p"].mean(0) if mode == "mean" else torch.zeros_like(seen["p"][0])
    def hook(name, l, t):
        if name == "pattern" and l == layer:
            t = t.clone()
            t[:, head] = fill
            return t
    return logit_diff(run_model(weights, tokens, hook)[0], end, io, s)
'''),
    ("ablate_head", "forgetting that LayerNorm is recomputed", _FROZEN_RUN),
    ("ablate_head", "the direct path only", '''
def ablate_head(weights, tokens, end, io, s, layer, head, mode):
    logits, zs = run_model(weights, tokens)
    rows = torch.arange(tokens.shape[0])
    z = zs[layer][:, :, head]
    fill = z.mean(0)[end] if mode == "mean" else torch.zeros_like(z[rows, end])
    change = (fill - z[rows, end]) @ weights["W_O"][layer, head]
    change = change - change.mean(-1, keepdim=True)
    # the clean final LayerNorm scale, recomputed from the clean logits' residual: cheat via a rerun
    _, scale = _final_scale(weights, tokens, end)
    direction = weights["W_U"][:, io].T - weights["W_U"][:, s].T
    return logit_diff(logits, end, io, s) + (change / scale * direction).sum(-1)

def _final_scale(weights, tokens, end):
    seen = {}
    def grab(x):
        seen["x"] = x
    store = {}
    w = weights
    seq = tokens.shape[1]
    x = w["W_E"][tokens] + w["W_pos"][:seq]
    mask = torch.ones(seq, seq, dtype=torch.bool).tril()
    ln = lambda x: (x - x.mean(-1, keepdim=True)) / ((x - x.mean(-1, keepdim=True)).pow(2).mean(-1, keepdim=True) + 1e-5).sqrt()
    for l in range(w["W_Q"].shape[0]):
        h = ln(x)
        q = torch.einsum("bsd,hde->bshe", h, w["W_Q"][l]) + w["b_Q"][l]
        k = torch.einsum("bsd,hde->bshe", h, w["W_K"][l]) + w["b_K"][l]
        v = torch.einsum("bsd,hde->bshe", h, w["W_V"][l]) + w["b_V"][l]
        p = (torch.einsum("bqhe,bkhe->bhqk", q, k) / math.sqrt(q.shape[-1])).masked_fill(~mask, float("-inf")).softmax(-1)
        x = x + torch.einsum("bshe,hed->bsd", torch.einsum("bhqk,bkhe->bqhe", p, v), w["W_O"][l]) + w["b_O"][l]
        pre = ln(x) @ w["W_in"][l] + w["b_in"][l]
        x = x + 0.5 * pre * (1 + torch.tanh(math.sqrt(2 / math.pi) * (pre + 0.044715 * pre ** 3))) @ w["W_out"][l] + w["b_out"][l]
    xe = x[torch.arange(x.shape[0]), end]
    xe = xe - xe.mean(-1, keepdim=True)
    return xe, (xe.pow(2).mean(-1, keepdim=True) + 1e-5).sqrt()
'''),
    ("ablate_head", "averaging over positions too", '''
def ablate_head(weights, tokens, end, io, s, layer, head, mode):
    _, zs = run_model(weights, tokens)
    fill = zs[layer][:, :, head].mean(dim=(0, 1)) if mode == "mean" else 0.0
    def hook(name, l, t):
        if name == "z" and l == layer:
            t = t.clone()
            t[:, :, head] = fill
            return t
    return logit_diff(run_model(weights, tokens, hook)[0], end, io, s)
'''),
    ("patch_head_output", "patching every position", '''
def patch_head_output(weights, clean_tokens, corrupt_tokens, end, io, s, layer, head, pos):
    _, zc = run_model(weights, corrupt_tokens)
    def hook(name, l, t):
        if name == "z" and l == layer:
            t = t.clone()
            t[:, :, head] = zc[layer][:, :, head]
            return t
    return logit_diff(run_model(weights, clean_tokens, hook)[0], end, io, s)
'''),
    ("patch_head_output", "patching at END instead of `pos`", '''
_patch_ok = patch_head_output

def patch_head_output(weights, clean_tokens, corrupt_tokens, end, io, s, layer, head, pos):
    return _patch_ok(weights, clean_tokens, corrupt_tokens, end, io, s, layer, head, end)
'''),
    ("patch_head_output", "patching the pattern instead of the output", '''
def patch_head_output(weights, clean_tokens, corrupt_tokens, end, io, s, layer, head, pos):
    rows = torch.arange(clean_tokens.shape[0])
    seen = {}
    def keep(name, l, t):
        if name == "pattern" and l == layer:
            seen["p"] = t[rows, head, pos]
    run_model(weights, corrupt_tokens, keep)
    def hook(name, l, t):
        if name == "pattern" and l == layer:
            t = t.clone()
            t[rows, head, pos] = seen["p"]
            return t
    return logit_diff(run_model(weights, clean_tokens, hook)[0], end, io, s)
'''),
    ("parallel_share_null", "a chance level of 1/d^2", '''
def parallel_share_null(x_q, x_k, B, u, m):
    chance = torch.tensor(1.0 / x_q.shape[-1] ** 2, dtype=x_q.dtype)
    return chance, chance, chance
'''),
    ("parallel_share_null", "projecting on an unnormalised direction", '''
def parallel_share_null(x_q, x_k, B, u, m):
    share = (u @ x_q) * (m @ x_k) * ((u @ B) * m).sum(-1) / (x_q @ B @ x_k)
    return share.mean(), torch.quantile(share, 0.025), torch.quantile(share, 0.975)
'''),
    ("patch_head_output", "forgetting that LayerNorm is recomputed", _FROZEN_RUN + '''
def patch_head_output(weights, clean_tokens, corrupt_tokens, end, io, s, layer, head, pos):
    _, zc = run_model(weights, corrupt_tokens)
    rows = torch.arange(clean_tokens.shape[0])
    donor = zc[layer][rows, pos, head]
    run_model(weights, clean_tokens)            # records the clean scales, reused below
    def hook(name, l, t):
        if name == "z" and l == layer:
            t = t.clone()
            t[rows, pos, head] = donor
            return t
    return logit_diff(run_model(weights, clean_tokens, hook)[0], end, io, s)
'''),
]


def test_every_causal_mistake_differs_from_the_reference_and_has_an_edit():
    from mechinterp_edu.grader.spec import exercises_for

    exercises = {e.name: e for e in exercises_for(5) if e.name in CAUSAL + NULL}
    assert set(exercises) == set(CAUSAL + NULL)
    for exercise in exercises.values():
        cases = exercise.cases()
        assert exercise.name in NULL or any("ioi_small" in c.label for c in cases)
        for mistake in exercise.mistakes:
            def gap(c):
                want, wrong = exercise.reference(*c.args), mistake.fn(*c.args)
                pairs = zip(want, wrong) if isinstance(want, tuple) else [(want, wrong)]
                return max(float((torch.as_tensor(a) - torch.as_tensor(b)).abs().max()) for a, b in pairs)
            assert any(gap(c) > 1e-3 for c in cases), f"{exercise.name}: {mistake.name!r} equals the reference"
    assert {(e, m) for e, m, _ in MISTAKE_EDITS} == {(e.name, m.name) for e in exercises.values()
                                                      for m in e.mistakes}


@pytest.mark.parametrize("exercise,mistake,edit", MISTAKE_EDITS, ids=[f"{e}:{m}" for e, m, _ in MISTAKE_EDITS])
def test_grader_names_each_causal_mistake(exercise, mistake, edit):
    source = LESSON.solution_path.read_text() + "\n\n# --- one mistake ---\n" + edit
    (result,) = _grade(source, [exercise]).results
    assert not result.passed
    assert mistake.lower() in result.feedback.lower(), f"expected {mistake!r}; got:\n{result.feedback}"


def test_main_path_has_at_most_eight_exercises_and_the_rest_are_optional():
    from mechinterp_edu.grader.spec import exercises_for

    exercises = exercises_for(5)
    main = [e.name for e in exercises if not e.optional]
    assert len(main) <= 8, main
    assert {"logit_diff", "ablate_head", "patch_head_output"} <= set(main)
    text = LESSON.source_path.read_text()
    intro = text.split("**Optional:**")[1].split("::")[0]
    assert {e.name for e in exercises if e.optional} == set(re.findall(r"`(\w+)`", intro))


def test_fast_and_hooked_agree_on_a_random_model_with_real_layernorm_parameters():
    """A freshly initialised GPT-2-architecture model of another shape, with random LayerNorm gains
    and biases (so folding them is not trivial), wrapped like the toy: both implementations agree."""
    from mechinterp_edu.lessons.ioi_scores.model import CONFIG, build_hf, wrap

    config = dict(CONFIG, n_layers=2, n_heads=3, d_model=48, d_mlp=96)
    hf = build_hf(config, seed=3)
    g = torch.Generator().manual_seed(3)
    with torch.no_grad():
        for module in hf.modules():
            if isinstance(module, torch.nn.LayerNorm):
                module.weight.copy_(1 + 0.3 * torch.randn(module.weight.shape, generator=g))
                module.bias.copy_(0.2 * torch.randn(module.bias.shape, generator=g))
    with contextlib.redirect_stdout(io.StringIO()):
        model = wrap(hf, config)
    V = len(config["vocab"])
    tokens = torch.randint(0, V, (6, 9), generator=g)
    corrupt = torch.randint(0, V, (6, 9), generator=g)
    end = torch.tensor([8, 7, 8, 5, 8, 6])
    io_t, s_t = torch.randint(0, V, (6,), generator=g), torch.randint(0, V, (6,), generator=g)
    pos = torch.tensor([3, 2, 8, 5, 1, 6])
    w = C.weights_of(model)
    with torch.no_grad():
        assert (C.clean_logit_diff(w, tokens, end, io_t, s_t) - C.logit_diff(model(tokens), end, io_t, s_t)).abs().max() < 1e-4
    for layer, head in ((0, 2), (1, 1)):
        for mode in C.MODES:
            a = C.ablate_head(w, tokens, end, io_t, s_t, layer, head, mode)
            b = C.ablate_head_hooked(model, tokens, end, io_t, s_t, layer, head, mode)
            assert (a - b).abs().max() < 1e-4
        a = C.patch_head_output(w, tokens, corrupt, end, io_t, s_t, layer, head, pos)
        b = C.patch_head_output_hooked(model, tokens, corrupt, end, io_t, s_t, layer, head, pos)
        assert (a - b).abs().max() < 1e-4
    a = C.path_patch_query(w, tokens, corrupt, end, io_t, s_t, (0, 1), (1, 2))
    b = C.path_patch_query_hooked(model, tokens, corrupt, end, io_t, s_t, (0, 1), (1, 2))
    assert (a - b).abs().max() < 1e-4


def test_model_control_falls_back_to_the_toy_with_one_sentence():
    from mechinterp_edu.lessons.ioi_scores import charts
    from mechinterp_edu.live.registry import get_chart

    ctx = {"model": "max_of_4", "head": "auto", "target": "IO", "batch": 8, "seed": 0, "split": "test"}
    out = get_chart("ioi_scores.model_status").fn(ctx)
    assert "max_of_4" in out[0] and "ioi_small" in out[0]
    assert charts.setup(ctx).model_label.startswith("ioi_small")
    assert all("max_of_4" not in str(o) for o in get_chart("ioi_scores.head_effects").fn(ctx))
