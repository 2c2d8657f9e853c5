"""Lesson 5: IO/S1 decomposition of attention scores.

Independent truths used here: the model's own q, k and attention pattern (hook_q, hook_k,
hook_pattern), the residual stream in the cache, least squares (torch.linalg.lstsq) for
projections, Monte Carlo for chance levels, sympy for the derivations, and the worked solutions
as a second implementation of every exercise.
"""
from __future__ import annotations

import contextlib
import importlib.util
import io
import math
import sys

import pytest
import torch

from mechinterp_edu.course import get_lesson
from mechinterp_edu.lessons.ioi_scores import bench as ioi_bench
from mechinterp_edu.lessons.ioi_scores import reference as ref
from mechinterp_edu.lessons.ioi_scores.data import encode_prompts, sample_prompts

LESSON = get_lesson(5)


def _quiet(fn, *args, **kwargs):
    with contextlib.redirect_stdout(io.StringIO()):
        return fn(*args, **kwargs)


@pytest.fixture(scope="module")
def solution():
    spec = importlib.util.spec_from_file_location("_lesson05_solution", LESSON.solution_path)
    module = importlib.util.module_from_spec(spec)
    sys.modules[spec.name] = module
    spec.loader.exec_module(module)
    yield module
    sys.modules.pop(spec.name, None)


@pytest.fixture(scope="module")
def toy64():
    from mechinterp_edu.models.zoo import load_model
    return _quiet(load_model, "ioi_small", device="cpu", dtype=torch.float64)


@pytest.fixture(scope="module")
def batch(toy64):
    return encode_prompts(sample_prompts(24, "test", seed=7), toy64.ioi_vocab)


@pytest.fixture(scope="module")
def cache(toy64, batch):
    return ref.run_with_cache(toy64, batch.tokens)


@pytest.fixture(scope="module")
def inp(toy64, batch, cache):
    return ref.gather_head_inputs(toy64, batch, 2, 2, cache=cache)


# --------------------------------------------------------------------------- derivations
def test_every_derivation_step_proves():
    from mechinterp_edu.derivations import all_derivations, check

    mine = [d for d in all_derivations() if d.lesson == 5]
    assert {d.name for d in mine} >= {"ioi_scores.bilinear", "ioi_scores.layernorm", "ioi_scores.baseline",
                                      "ioi_scores.projection", "ioi_scores.four_terms",
                                      "ioi_scores.nulls"}
    for derivation in mine:
        for result in check(derivation):
            assert result.passed, f"{derivation.name}:{result.step}: {result.detail}"


@pytest.mark.parametrize("name", ["recompute_per_component", "chance_one_over_d_squared",
                                  "mean_abs_cos_squared", "b_Q_cancels", "residual_bias_cancels"])
def test_false_steps_fail(name):
    from mechinterp_edu.derivations.framework import prove
    from mechinterp_edu.lessons.ioi_scores.derivations import FALSE_STEPS

    passed, detail = prove(FALSE_STEPS[name])
    assert not passed, f"the false step {name} was accepted: {detail}"
    assert "not 0" in detail


# --------------------------------------------------------------------------- projections
def test_projection_against_least_squares():
    g = torch.Generator().manual_seed(0)
    v = torch.randn(9, 7, generator=g, dtype=torch.float64)
    dirs = torch.randn(9, 3, 7, generator=g, dtype=torch.float64) * 5
    dirs[:, 1] += 0.9 * dirs[:, 0]                                    # far from orthogonal
    par, perp = ref.project(v, dirs)
    coef = torch.linalg.lstsq(dirs.transpose(1, 2), v[..., None]).solution
    expected = (dirs.transpose(1, 2) @ coef)[..., 0]
    assert torch.allclose(par, expected, atol=1e-10)
    assert torch.allclose(par + perp, v)
    assert torch.einsum("bkd,bd->bk", dirs, perp).abs().max() < 1e-10
    assert torch.allclose(ref.project(par, dirs)[0], par, atol=1e-10)    # idempotent


@pytest.mark.parametrize("k", [1, 3])
def test_chance_level_is_k_over_d_not_one_over_d_squared(k):
    d, n = 32, 40000
    g = torch.Generator().manual_seed(k)
    v = torch.randn(n, d, generator=g, dtype=torch.float64)
    dirs = torch.randn(n, k, d, generator=g, dtype=torch.float64)
    frac = float(ref.fraction_explained(v, dirs))
    # cos^2 ~ Beta(k/2, (d-k)/2): standard deviation of the mean is below 0.2/sqrt(n)
    assert abs(frac - ref.chance_level(d, k)) < 5 * 0.2 / math.sqrt(n)
    assert abs(frac - 1 / d ** 2) > 0.02
    par, _ = ref.project(v, dirs)
    mean_abs_cos_sq = float((par.norm(dim=-1) / v.norm(dim=-1)).mean() ** 2)
    assert mean_abs_cos_sq < frac - 0.005, "(mean |cos|)^2 should fall below the mean of cos^2"


# --------------------------------------------------------------------------- against the model
def test_linear_maps_reproduce_the_models_scores(inp):
    real = inp.real_score()
    m_k, b_k = ref.score_linear_in_keys(inp.q, inp.W_K, inp.b_K, inp.scale_k)
    m_q, b_q = ref.score_linear_in_queries(inp.k, inp.W_Q, inp.b_Q, inp.scale_q)
    assert torch.allclose((inp.extras["resid_k"] * m_k).sum(-1) + b_k, real, atol=1e-9)
    assert torch.allclose((inp.extras["resid_end"] * m_q).sum(-1) + b_q, real, atol=1e-9)
    assert b_k.abs().max() > 1e-3 and b_q.abs().max() > 1e-3        # the bias terms matter here


def test_recomputing_layernorm_per_component_does_not_add_up(inp):
    real = inp.real_score()
    frozen = ref.decompose_keys(inp.q, inp.k_components, inp.scale_k, inp.W_K, inp.b_K).sum(-1)
    c = inp.k_components - inp.k_components.mean(-1, keepdim=True)
    own = c / c.pow(2).mean(-1, keepdim=True).add(1e-5).sqrt()
    recomputed = torch.einsum("bnd,de,be->b", own, inp.W_K, inp.q) / math.sqrt(inp.d_head) \
        + (inp.q * inp.b_K).sum(-1) / math.sqrt(inp.d_head)
    assert (frozen - real).abs().max() < 1e-9
    assert (recomputed - real).abs().max() > 1.0


@pytest.mark.parametrize("layer,head,target", [(1, 0, "IO"), (2, 2, "IO"), (2, 1, "S2"), (0, 3, "IO")])
def test_all_decompositions_add_up_and_agree_with_each_other(toy64, batch, cache, layer, head, target):
    inp = ref.gather_head_inputs(toy64, batch, layer, head, target=target, cache=cache)
    parts = ref.decompose_all(inp)
    assert ref.max_sum_error(inp, parts) < 1e-9
    slow = ioi_bench.decompose_all_loop(inp)
    for key in parts:
        assert torch.allclose(parts[key], slow[key], atol=1e-10), key
    for base in (False, True):
        tag = "base" if base else "raw"
        assert torch.allclose(parts[f"keys_{tag}"], ref.key_side(inp, base), atol=1e-10)
        assert torch.allclose(parts[f"queries_{tag}"], ref.query_side(inp, base), atol=1e-10)
        assert torch.allclose(parts[f"four_keys_{tag}"].sum(1), parts[f"keys_{tag}"], atol=1e-10)
        assert torch.allclose(parts[f"four_queries_{tag}"].sum(1), parts[f"queries_{tag}"], atol=1e-9)
        grid = ref.score_grid(inp, base)
        assert torch.allclose(grid, ioi_bench.score_grid_loop(inp, base), atol=1e-10)
        assert torch.allclose(grid.sum(1), parts[f"keys_{tag}"], atol=1e-9)     # column sums
        assert torch.allclose(grid.sum(2), parts[f"queries_{tag}"], atol=1e-9)  # row sums
    assert parts["keys_base"][:, -1].abs().max() == 0                          # b_K cancels


def test_four_terms_on_totals_match_the_per_component_split(inp):
    args = (inp.q_components.sum(1), inp.scale_q, inp.u)
    target = ref.four_terms(*args, inp.k_components.sum(1), inp.scale_k, inp.m_k,
                            inp.W_Q, inp.b_Q, inp.W_K, inp.b_K)
    base = ref.four_terms(*args, inp.base_components.sum(1), inp.scale_base, inp.m_base,
                          inp.W_Q, inp.b_Q, inp.W_K, inp.b_K)
    parts = ref.decompose_all(inp)
    assert torch.allclose(target, parts["four_keys_raw"].sum(-1), atol=1e-9)
    assert torch.allclose(target - base, parts["four_keys_base"].sum(-1), atol=1e-9)
    assert torch.allclose(target.sum(-1), inp.real_score(), atol=1e-9)
    share = ref.share_explained(target, base)
    assert abs(float(share.sum()) - 1) < 1e-12


def test_substitution_reproduces_the_model_when_given_its_own_residual(inp, cache):
    """LayerNorm recomputed on the real residual is the model's LayerNorm: q and k come back."""
    assert torch.allclose(ref.substituted_query(inp, inp.extras["resid_end"]), inp.q, atol=1e-9)
    assert torch.allclose(ref.substituted_key(inp, inp.extras["resid_k"]), inp.k, atol=1e-9)
    u = inp.u
    # only the direction matters (up to LayerNorm's epsilon, negligible once the vector is not tiny)
    assert torch.allclose(ref.substituted_query(inp, 10 * u), ref.substituted_query(inp, 75 * u), atol=1e-6)
    cands = {"real": inp.extras["resid_end"]}
    hist = ref.swap_histograms(inp, cands, "query")
    rows = torch.arange(inp.q.shape[0])
    pattern = cache[f"blocks.{inp.layer}.attn.hook_pattern"][rows, inp.head, inp.target_pos * 0 + 14]
    assert torch.allclose(hist["real"]["prob"], pattern[rows, inp.target_pos], atol=1e-9)
    assert torch.allclose(hist["real"]["score"], inp.real_score(), atol=1e-9)
    hist_k = ref.swap_histograms(inp, {"real": inp.extras["resid_k"]}, "key", baseline=True)
    assert torch.allclose(hist_k["real"]["score"], inp.real_score() - inp.real_score_base(), atol=1e-9)


# --------------------------------------------------------------------------- second implementation
def test_solutions_agree_with_the_reference_on_every_grading_case(solution):
    from mechinterp_edu.grader.spec import exercises_for

    for exercise in exercises_for(5):
        for case in exercise.cases():
            want = exercise.reference(*case.args)
            got = getattr(solution, exercise.name)(*case.args)
            tol = 1e-9 if "float64" in case.label else 1e-4
            pairs = zip(want, got) if isinstance(want, tuple) else [(want, got)]
            for w, g in pairs:
                w, g = torch.as_tensor(w, dtype=torch.float64), torch.as_tensor(g, dtype=torch.float64)
                scale = max(1.0, float(w.abs().max()))
                assert (w - g).abs().max() <= tol * scale, f"{exercise.name} on {case.label}"


# --------------------------------------------------------------------------- live charts
def test_every_chart_of_the_lesson_renders_on_the_toy():
    import altair as alt
    import pandas as pd

    from mechinterp_edu.derivations.framework import StepResult
    from mechinterp_edu.lesson_source import load_lesson
    from mechinterp_edu.live import compute

    ctx = {"batch": 16, "seed": 1}
    for name in load_lesson(5).refs("chart"):
        out = compute(name, ctx)
        for item in out if isinstance(out, list) else [out]:
            if isinstance(item, list):
                assert all(isinstance(r, StepResult) for r in item)
            elif isinstance(item, (alt.TopLevelMixin,)):
                item.to_dict()
            else:
                assert isinstance(item, (str, dict, pd.DataFrame)), f"{name}: {type(item)}"
    (frame,) = [x for x in compute("ioi_scores.sum_check", ctx) if isinstance(x, pd.DataFrame)]
    assert frame["within 1e-4"].all() and len(frame) == 10
    verdicts = compute("ioi_scores.ln_recompute", ctx)[1]
    assert verdicts and not verdicts[0].passed


def test_a_zoo_model_without_the_ioi_words_falls_back_to_ioi_small():
    """copy_suppressor has a word vocabulary (names and topics) but not the IOI sentences' words:
    the page says so and uses ioi_small instead of failing to encode the prompts."""
    from mechinterp_edu.lessons.ioi_scores import charts

    model, note = charts._model("copy_suppressor")
    assert model.ioi_vocab.words == charts._model("ioi_small")[0].ioi_vocab.words
    charts._encode(model, charts.ioi_data.sample_prompts(4, seed=0))      # reads IOI prompts
    assert "copy_suppressor does not read IOI prompts" in note


def test_bad_head_text_gives_a_message_not_a_traceback():
    from mechinterp_edu.live import compute

    assert "layer.head" in compute("ioi_scores.key_decomposition", {"head": "ten", "batch": 8})
    assert "not one of its heads" in compute("ioi_scores.grid", {"head": "7.1", "batch": 8})


def test_bench_quick_reports_ratios():
    rows = _quiet(ioi_bench.bench, quick=True)
    assert len(rows) == 2
    for row in rows:
        assert row.ratio is not None and row.baseline_name == "per-component loop"
        assert "forward pass" in row.note and "agree" in row.note


# --------------------------------------------------------------------------- grader
def _grade(source: str, exercises=None):
    from mechinterp_edu.grader.grade import grade_source
    return grade_source(source, 5, exercises=exercises, sandbox=False)


def test_solution_gets_full_marks_and_stubs_get_zero():
    report = _grade(LESSON.solution_path.read_text())
    assert report.score == report.max_score > 0, [(r.exercise, r.feedback) for r in report.results]
    stubs = _grade(LESSON.exercise_path.read_text())
    assert stubs.score == 0
    assert all("not implemented" in r.feedback for r in stubs.results)


_RECOMPUTE = '''
def _own_ln(c):
    c = c - c.mean(-1, keepdim=True)
    return c / torch.sqrt((c ** 2).mean(-1, keepdim=True) + 1e-5)

def _by_component(frozen, components, scale, W, b):
    cols = [((_own_ln(components[:, j]) @ W) * frozen).sum(-1) / math.sqrt(W.shape[1])
            for j in range(components.shape[1])]
    cols.append((frozen * b).sum(-1) / math.sqrt(W.shape[1]))
    return torch.stack(cols, 1)
'''
_NO_BIAS = '''
def _by_component(frozen, components, scale, W, b):
    cols = [((_frozen_layernorm(components[:, j], scale) @ W) * frozen).sum(-1) / math.sqrt(W.shape[1])
            for j in range(components.shape[1])]
    cols.append(torch.zeros_like(cols[0]))
    return torch.stack(cols, 1)
'''
_UNNORMALISED_PROJECT = '''
def project(vectors, directions):
    if directions.ndim == 2:
        directions = directions[:, None, :]
    parallel = torch.zeros_like(vectors)
    for i in range(directions.shape[1]):
        u = directions[:, i]
        parallel = parallel + (vectors * u).sum(-1, keepdim=True) * u
    return parallel, vectors - parallel
'''
_MAP = '''
def score_linear_in_keys(q, W_K, b_K, scale):
    return _wrong(q, W_K, b_K, scale)

def score_linear_in_queries(k, W_Q, b_Q, scale):
    return _wrong(k, W_Q, b_Q, scale)
'''
_FOUR = '''
def four_terms(x_q, scale_q, u, x_k, scale_k, m, W_Q, b_Q, W_K, b_K):
    xq_par, xq_perp = project(x_q, u)
    xk_par, xk_perp = project(x_k, m)
    q_par, q_perp = LN(xq_par, scale_q) @ W_Q + BQ_PAR, LN(xq_perp, scale_q) @ W_Q + BQ_PERP
    k_par, k_perp = LN(xk_par, scale_k) @ W_K + BK_PAR, LN(xk_perp, scale_k) @ W_K + BK_PERP
    terms = [(q_par, k_par), (q_par, k_perp), (q_perp, k_par), (q_perp, k_perp)]
    return torch.stack([(a * b).sum(-1) / math.sqrt(W_Q.shape[1]) for a, b in terms], dim=1)
'''
_FOUR_OK = {"LN": "_frozen_layernorm", "BQ_PAR": "0", "BQ_PERP": "b_Q", "BK_PAR": "0", "BK_PERP": "b_K"}


def _four(**changes):
    text = _FOUR
    for key, value in {**_FOUR_OK, **changes}.items():
        text = text.replace(key, value)
    return text


MISTAKE_EDITS: list[tuple[str, str, str]] = [
    ("project", "projecting on an unnormalised direction", _UNNORMALISED_PROJECT),
    ("project", "projecting on each direction separately", _UNNORMALISED_PROJECT.replace(
        "u = directions[:, i]", "u = directions[:, i] / directions[:, i].norm(dim=-1, keepdim=True)")),
    ("fraction_explained", "(mean |cos|)^2 for the fraction", '''
def fraction_explained(vectors, directions):
    parallel, _ = project(vectors, directions)
    return ((parallel.norm(dim=-1) / vectors.norm(dim=-1)).mean() ** 2).item()
'''),
    ("fraction_explained", "projecting on an unnormalised direction", _UNNORMALISED_PROJECT.replace(
        "def project(", "def _raw_project(") + '''
def fraction_explained(vectors, directions):
    parallel, _ = _raw_project(vectors, directions)
    return ((parallel ** 2).sum(-1) / (vectors ** 2).sum(-1)).mean().item()
'''),
    *[(name, mistake, _MAP + body) for name in ("score_linear_in_keys", "score_linear_in_queries")
      for mistake, body in (
          ("forgetting the bias term", '''
def _wrong(f, W, b, scale):
    linear_map, bias = _affine_map(f, W, b, scale)
    return linear_map, torch.zeros_like(bias)
'''),
          ("ignoring the frozen LayerNorm scale", '''
def _wrong(f, W, b, scale):
    return _affine_map(f, W, b, torch.ones_like(scale))
'''),
          ("forgetting LayerNorm's centring", '''
def _wrong(f, W, b, scale):
    d = math.sqrt(W.shape[1])
    return f @ W.T / d / scale[:, None], (f * b).sum(-1) / d
'''),
          ("forgetting 1/sqrt(d_head)", '''
def _wrong(f, W, b, scale):
    linear_map, bias = _affine_map(f, W, b, scale)
    return linear_map * math.sqrt(W.shape[1]), bias * math.sqrt(W.shape[1])
'''))],
    ("decompose_keys", "recomputing LN per component", _RECOMPUTE),
    ("decompose_keys", "forgetting the bias term", _NO_BIAS),
    ("decompose_queries", "recomputing LN per component", _RECOMPUTE),
    ("decompose_queries", "forgetting the bias term", _NO_BIAS),
    ("decompose_keys_minus_baseline", "keeping q . b_K after subtracting the baseline", '''
def decompose_keys_minus_baseline(q, components, scale, components_base, scale_base, W_K, b_K):
    out = decompose_keys(q, components, scale, W_K, b_K) - decompose_keys(q, components_base, scale_base, W_K, b_K)
    out[:, -1] = (q * b_K).sum(-1) / math.sqrt(W_K.shape[1])
    return out
'''),
    ("decompose_keys_minus_baseline", "one LayerNorm scale for both positions", '''
def decompose_keys_minus_baseline(q, components, scale, components_base, scale_base, W_K, b_K):
    return decompose_keys(q, components, scale, W_K, b_K) - decompose_keys(q, components_base, scale, W_K, b_K)
'''),
    ("decompose_keys_minus_baseline", "recomputing LN per component", _RECOMPUTE),
    ("decompose_queries_minus_baseline", "subtracting the baseline on the bias", '''
def decompose_queries_minus_baseline(k, k_base, components, scale, W_Q, b_Q):
    out = decompose_queries(k, components, scale, W_Q, b_Q) - decompose_queries(k_base, components, scale, W_Q, b_Q)
    out[:, -1] = 0.0
    return out
'''),
    ("decompose_queries_minus_baseline", "recomputing LN per component", _RECOMPUTE),
    ("four_terms", "bias in the parallel part", _four(BQ_PAR="b_Q", BQ_PERP="0", BK_PAR="b_K", BK_PERP="0")),
    ("four_terms", "projecting on an unnormalised direction",
     _UNNORMALISED_PROJECT.replace("def project(", "def _raw_project(")
     + _four().replace("project(x_q", "_raw_project(x_q").replace("project(x_k", "_raw_project(x_k")),
    ("four_terms", "recomputing LN per component", _RECOMPUTE + _four(LN="_ln_own")
     .replace("def four_terms", "def _ln_own(x, s):\n    return _own_ln(x)\n\ndef four_terms")),
    ("share_explained", "mean of per-prompt shares", '''
def share_explained(terms, terms_base):
    difference = terms - terms_base
    return (difference / difference.sum(1, keepdim=True)).mean(0)
'''),
    ("share_explained", "not subtracting the baseline", '''
def share_explained(terms, terms_base):
    return terms.mean(0) / terms.sum(1).mean()
'''),
]


def test_catalogue_covers_the_issue_and_every_mistake_differs_from_the_reference():
    from mechinterp_edu.grader.spec import exercises_for

    # the causal and null exercises have their own catalogue test (tests/test_lesson05_causal.py)
    causal = {"logit_diff", "ablate_head", "patch_head_output", "parallel_share_null"}
    exercises = {e.name: e for e in exercises_for(5) if e.name not in causal}
    names = {m.name for e in exercises.values() for m in e.mistakes}
    assert {"recomputing LN per component", "forgetting the bias term", "subtracting the baseline on the bias",
            "(mean |cos|)^2 for the fraction", "projecting on an unnormalised direction"} <= names
    for exercise in exercises.values():
        cases = exercise.cases()
        assert any("ioi_small" in c.label for c in cases), "the trained toy must be among the cases"
        assert {c.label.rsplit(", ", 1)[-1] for c in cases} >= {"float32", "float64"}
        for mistake in exercise.mistakes:
            differs = False
            for case in cases:
                want, wrong = exercise.reference(*case.args), mistake.fn(*case.args)
                pairs = zip(want, wrong) if isinstance(want, tuple) else [(want, wrong)]
                differs |= any(float((torch.as_tensor(a) - torch.as_tensor(b)).abs().max()) > 1e-3
                               for a, b in pairs)
            assert differs, f"{exercise.name}: mistake {mistake.name!r} equals the reference on every case"
    assert {(e, m) for e, m, _ in MISTAKE_EDITS} == {(e.name, m.name) for e in exercises.values()
                                                      for m in e.mistakes}


@pytest.mark.parametrize("exercise,mistake,edit", MISTAKE_EDITS, ids=[f"{e}:{m}" for e, m, _ in MISTAKE_EDITS])
def test_grader_names_each_catalogued_mistake(exercise, mistake, edit):
    source = LESSON.solution_path.read_text() + "\n\n# --- one mistake ---\n" + edit
    report = _grade(source, exercises=[exercise])
    (result,) = report.results
    assert not result.passed
    assert mistake.lower() in result.feedback.lower(), f"expected {mistake!r}; got:\n{result.feedback}"


# --------------------------------------------------------------------------- the lesson's claims about the toy
def test_what_the_lesson_says_the_toy_does(toy64):
    """The lesson's text about ioi_small, measured on held-out prompts."""
    batch = encode_prompts(sample_prompts(128, "test", seed=11), toy64.ioi_vocab)
    cache = ref.run_with_cache(toy64, batch.tokens)
    rows = torch.arange(len(batch))
    end = batch.positions["END"]

    def attention(layer, name):
        pattern = cache[f"blocks.{layer}.attn.hook_pattern"][rows, :, end]
        return pattern[rows, :, batch.positions[name]].mean(0)

    # layer 0 spreads END's attention over IO and S1; layers 1 and 2 look almost only at S2
    assert (attention(0, "IO") + attention(0, "S1") > 0.25).all()
    for layer in (1, 2):
        assert (attention(layer, "S2") > 0.8).all() and (attention(layer, "IO") < 0.05).all()
    # layer-1 heads write a quarter to a half of their output along W_U[IO], under a tenth along W_U[S]
    inp = ref.gather_head_inputs(toy64, batch, 2, 2, cache=cache)
    for head in range(4):
        v = inp.q_components[:, inp.labels.index(f"1.{head}")]
        assert 0.2 < float(ref.fraction_explained(v, inp.u)) < 0.5
        assert float(ref.fraction_explained(v, inp.u_s)) < 0.1
    # END -> IO net scores are small next to the raw scores; END -> S2 nets run through q-perp
    for layer, head in ((1, 0), (2, 2)):
        io_inp = ref.gather_head_inputs(toy64, batch, layer, head, target="IO", cache=cache)
        totals = ref.expected_totals(io_inp)
        assert totals["base"].mean().abs() < 3 and totals["raw"].mean() < -30
        s2 = ref.decompose_all(ref.gather_head_inputs(toy64, batch, layer, head, target="S2", cache=cache))
        four = s2["four_keys_base"].sum(-1)
        share = ref.share_explained(four, torch.zeros_like(four))
        assert float(share[2] + share[3]) > 0.7
