"""Lesson 4: circuits of a max-of-K model.

Truths used: the model's own forward pass (run_with_cache; scores from hook_q and hook_k),
the worked solutions (a second implementation), sympy, and hand-written submissions for
the grader.
"""
from __future__ import annotations

import math

import pytest
import torch
from support import import_file

from mechinterp_edu.course import get_lesson
from mechinterp_edu.lessons.max_of_k import bug_lab
from mechinterp_edu.lessons.max_of_k import reference as ref

LESSON = get_lesson(4)
KEYS = ref.WEIGHT_NAMES


pytestmark = pytest.mark.usefixtures("one_torch_thread")


@pytest.fixture(scope="module", autouse=True)
def lesson_modules():
    """Register this lesson's derivations and charts (without importing other lessons')."""
    import mechinterp_edu.lessons.max_of_k.derivations  # noqa: F401
    import mechinterp_edu.lessons.max_of_k.grading  # noqa: F401
    import mechinterp_edu.lessons.max_of_k.charts  # noqa: F401


@pytest.fixture(scope="module")
def sol():
    return import_file(LESSON.solution_path, "_lesson04_solution")


@pytest.fixture(scope="module")
def stubs():
    return import_file(LESSON.exercise_path, "_lesson04_exercise")


@pytest.fixture(scope="module")
def model64():
    from mechinterp_edu.models.zoo import load_model
    return load_model("max_of_4", device="cpu", dtype=torch.float64)


@pytest.fixture(scope="module")
def trained(model64):
    return ref.head_weights(model64)


RANDOM = [  # (d_vocab, n_ctx, d_model, d_head, seed, dtype)
    (64, 4, 32, 32, 0, torch.float64),
    (10, 5, 16, 8, 1, torch.float32),
    (7, 2, 6, 4, 2, torch.float64),
    (5, 1, 4, 4, 3, torch.float64),
]


def _weights(shape):
    v, n, m, d, seed, dtype = shape
    return ref.random_weights(v, n, m, d, seed=seed, dtype=dtype)


def _tokens(batch, n_ctx, d_vocab, seed=0):
    return torch.randint(0, d_vocab, (batch, n_ctx), generator=torch.Generator().manual_seed(seed))


def _close(a, b, dtype=torch.float64):
    tol = 1e-10 if dtype == torch.float64 else 1e-4
    scale = max(1.0, float(b.abs().max()))
    return float((a - b).abs().max()) <= tol * scale


# --------------------------------------------------------------------------- reference vs solution
@pytest.mark.parametrize("shape", RANDOM, ids=lambda s: f"V{s[0]}-n{s[1]}-m{s[2]}-d{s[3]}")
def test_reference_and_solution_agree_on_random_weights(shape, sol):
    w = _weights(shape)
    dtype = shape[-1]
    W = [w[k] for k in KEYS]
    pairs = [
        (ref.eqke(*W[:4]), sol.eqke(*W[:4])),
        (ref.eqkp(*W[:4]), sol.eqkp(*W[:4])),
        (ref.eu(w["W_E"], w["W_pos"], w["W_U"]), sol.eu(w["W_E"], w["W_pos"], w["W_U"])),
        (ref.evou(w["W_E"], w["W_pos"], *W[4:]), sol.evou(w["W_E"], w["W_pos"], *W[4:])),
        (ref.pvou(w["W_pos"], *W[4:]), sol.pvou(w["W_pos"], *W[4:])),
        *zip(ref.mean_diff_positions(w["W_pos"]), sol.mean_diff_positions(w["W_pos"])),
        *zip(bug_lab.debug_circuits(*W), sol.debug_circuits(*W)),
    ]
    tokens = _tokens(32, shape[1], shape[0])
    pairs.append((ref.logits_from_circuits(tokens, *W), sol.logits_from_circuits(tokens, *W)))
    if shape[1] > 1:
        pairs.append((bug_lab.debug_training_loss(tokens, *W), sol.debug_training_loss(tokens, *W)))
    for got, want in pairs:
        assert got.dtype == want.dtype == dtype and got.shape == want.shape
        assert _close(got, want, dtype)
    P_avg, P_hat = ref.mean_diff_positions(w["W_pos"])
    assert P_avg.shape == (shape[2],) and P_hat.shape == (shape[1], shape[2])
    assert float(P_hat.sum(0).abs().max()) < 1e-5


def test_tables_of_the_trained_model(trained, sol):
    W = [trained[k] for k in KEYS]
    c = ref.circuits(*W)
    assert c.EQKE.shape == (64, 64) and c.EQKP.shape == (64, 4) and c.PVOU.shape == (4, 64)
    for got, want in zip(c.as_tuple(), sol.debug_circuits(*W)):
        assert _close(got, want)
    # what a trained max-of-K model looks like (the lesson's claims)
    assert float((c.EQKE.diff(dim=1) > 0).double().mean()) > 0.85       # rows rise with the key
    assert float(c.EQKP.abs().max()) < 0.02 * float(c.EQKE.abs().max())   # positions barely matter
    assert ref.copying_diagonal_fraction(c.EVOU) > 0.8                    # EVOU copies
    assert ref.copying_diagonal_fraction(c.EU) < 0.3                      # EU does not


def test_logits_from_circuits_equal_the_forward_pass(model64, trained, sol):
    tokens = _tokens(500, 4, 64, seed=7)
    W = [trained[k] for k in KEYS]
    want = ref.model_last_logits(model64, tokens)
    assert float((ref.logits_from_circuits(tokens, *W) - want).abs().max()) <= 1e-5
    assert float((sol.logits_from_circuits(tokens, *W) - want).abs().max()) <= 1e-5


def test_scores_from_tables_equal_hook_q_and_hook_k(model64, trained):
    tokens = _tokens(500, 4, 64, seed=8)
    names = ("blocks.0.attn.hook_q", "blocks.0.attn.hook_k")
    _, cache = model64.run_with_cache(tokens, names_filter=lambda n: n in names)
    q, k = cache[names[0]][:, -1, 0], cache[names[1]][:, :, 0]
    scores = (k @ q[:, :, None]).squeeze(-1) / math.sqrt(32)
    c = ref.circuits(*(trained[k] for k in KEYS))
    assert float((ref.scores_from_tables(tokens, c) - scores).abs().max()) <= 1e-5


def test_reference_runs_batched_and_refuses_short_sequences(trained):
    c = ref.circuits(*(trained[k].float() for k in KEYS))
    out = ref.logits_from_tables(_tokens(7, 4, 64), c)
    assert out.shape == (7, 64) and out.dtype == torch.float32
    with pytest.raises(ValueError, match="full-length sequences"):
        ref.logits_from_tables(_tokens(7, 3, 64), c)


# --------------------------------------------------------------------------- SVD view
def test_eqke_rank_one_conventions(trained, sol):
    M = ref.eqke(*(trained[k] for k in KEYS[:4]))
    ratio, v, u = ref.eqke_rank_one(M)
    S = torch.linalg.svdvals(M)
    assert math.isclose(ratio, float(S[0] / S[1]), rel_tol=1e-9)
    assert math.isclose(float(v.norm()), 1, rel_tol=1e-9) and math.isclose(float(u.norm()), 1, rel_tol=1e-9)
    assert ref.correlation(v, torch.arange(64.0)) > 0
    # EQKE v = sigma1 u with sigma1 > 0
    assert torch.allclose(M @ v, S[0] * u, atol=1e-8 * float(S[0]))
    s_ratio, s_v, s_u = sol.eqke_rank_one(M)
    assert math.isclose(s_ratio, ratio, rel_tol=1e-9)
    assert torch.allclose(s_v, v, atol=1e-9) and torch.allclose(s_u, u, atol=1e-9)


@pytest.mark.parametrize("flip", [False, True])
def test_eqke_rank_one_fixes_the_sign_whatever_svd_returns(flip, sol):
    gen = torch.Generator().manual_seed(5)
    idx = torch.arange(9, dtype=torch.float64)
    v = (idx - idx.mean()) * (-1 if flip else 1)
    u = 1 + 0.1 * torch.randn(9, generator=gen, dtype=torch.float64)
    M = 10 * torch.outer(u, v) + 0.01 * torch.randn(9, 9, generator=gen, dtype=torch.float64)
    for fn in (ref.eqke_rank_one, sol.eqke_rank_one):
        _, size, query = fn(M)
        assert ref.correlation(size, idx) > 0.99
        assert bool((torch.sign(query) == (-1 if flip else 1)).all())


# --------------------------------------------------------------------------- the notes' symptoms and the bug lab
def test_each_circuit_bug_produces_its_factor(trained):
    W = [trained[k] for k in KEYS]
    good = ref.circuits(*W)
    scaled = bug_lab.buggy_circuits(*W, bugs=["divide_by_d_head"])
    for a, b in ((scaled.EQKE, good.EQKE), (scaled.EQKP, good.EQKP)):
        assert torch.allclose(a, b / math.sqrt(32), atol=1e-12)         # 1/sqrt(32) = 0.177
    raw = bug_lab.buggy_circuits(*W, bugs=["raw_pos_in_eqkp"])
    offset = raw.EQKP - good.EQKP
    assert float((offset - offset[:, :1]).abs().max()) < 1e-10           # one constant per row
    assert float(raw.EQKP.abs().max()) > 10 * float(good.EQKP.abs().max())
    tokens = _tokens(400, 4, 64, seed=9)
    # ...which softmax ignores: identical logits, a logits-only check cannot see it
    assert float((ref.logits_from_tables(tokens, raw) - ref.logits_from_tables(tokens, good)).abs().max()) < 1e-10
    dropped = bug_lab.buggy_circuits(*W, bugs=["drop_query_pos"])
    assert float(dropped.EQKE.std()) < 0.5 * float(good.EQKE.std())


def test_training_loss_equals_the_models_own_loss(model64, trained):
    from mechinterp_edu.lessons.max_of_k.model import _forward_last

    tokens = _tokens(256, 4, 64, seed=10)
    W = [trained[k] for k in KEYS]
    logits = ref.model_last_logits(model64, tokens)
    want = torch.nn.functional.cross_entropy(logits, tokens.max(-1).values)
    assert torch.allclose(bug_lab.training_loss(tokens, *W), want, atol=1e-10)
    want_last = torch.nn.functional.cross_entropy(logits, tokens[:, -1])
    assert torch.allclose(bug_lab.training_loss(tokens, *W, bugs=["last_token_target"]), want_last, atol=1e-10)
    with torch.no_grad():
        hooked = _forward_last(model64, tokens, frozenset({"sqrt_d_multiplier"}))
    want_sqrt = torch.nn.functional.cross_entropy(hooked, tokens.max(-1).values)
    assert torch.allclose(bug_lab.training_loss(tokens, *W, bugs=["sqrt_d_multiplier"]), want_sqrt, atol=1e-8)


def test_exercise_files_buggy_functions_have_the_catalogued_bugs(stubs, trained):
    W = [trained[k] for k in KEYS]
    for got, want in zip(stubs.buggy_circuits(*W), bug_lab.buggy_circuits(*W).as_tuple()):
        assert torch.allclose(got, want, atol=1e-10)
    tokens = _tokens(128, 4, 64, seed=11)
    assert torch.allclose(stubs.buggy_training_loss(tokens, *W),
                          bug_lab.training_loss(tokens, *W, bugs=bug_lab.TRAINING_BUGS), atol=1e-10)


def test_train_tiny_shows_the_last_token_symptom(stubs, sol):
    def last_token_loss(tokens, *W):
        return bug_lab.training_loss(tokens, *W, bugs=["last_token_target"])

    diagonal = {}
    for name, loss in (("last", last_token_loss), ("max", sol.debug_training_loss)):
        w = stubs.train_tiny(loss, steps=400, d_vocab=16, d_model=8, seed=1)
        assert set(w) == set(KEYS) and not any(t.requires_grad for t in w.values())
        diagonal[name] = ref.copying_diagonal_fraction(sol.eu(w["W_E"], w["W_pos"], w["W_U"]))
    assert diagonal["last"] >= 0.5 > 0.25 >= diagonal["max"], diagonal


def test_stubs_raise_not_implemented(stubs):
    w = ref.random_weights(5, 3, 4, 4)
    W = [w[k] for k in KEYS]
    tokens = _tokens(2, 3, 5)
    calls = {
        "mean_diff_positions": (w["W_pos"],), "eqke": W[:4], "eqkp": W[:4],
        "eu": (w["W_E"], w["W_pos"], w["W_U"]), "evou": (w["W_E"], w["W_pos"], *W[4:]),
        "pvou": (w["W_pos"], *W[4:]), "logits_from_circuits": (tokens, *W),
        "eqke_rank_one": (torch.eye(3),), "debug_circuits": W, "debug_training_loss": (tokens, *W),
    }
    for name, args in calls.items():
        with pytest.raises(NotImplementedError, match="not implemented yet"):
            getattr(stubs, name)(*args)


# --------------------------------------------------------------------------- derivations
def test_every_registered_step_proves():
    from mechinterp_edu.derivations import check
    from mechinterp_edu.lessons.max_of_k.derivations import CIRCUITS, FACTORS

    for derivation in (CIRCUITS, FACTORS):
        assert derivation.lesson == 4
        for result in check(derivation):
            assert result.passed, f"{result.derivation}:{result.step}: {result.detail}"


def test_the_notes_steps_fail():
    from mechinterp_edu.derivations import check
    from mechinterp_edu.lessons.max_of_k.derivations import FALSE_STEPS

    results = check(FALSE_STEPS)
    assert [r.step for r in results] == ["x_inverse", "x_inverse_table", "drop_query_position"]
    for result in results:
        assert not result.passed and "not 0" in result.detail, (result.step, result.detail)


def test_matrix_steps_fail_when_perturbed():
    """The prover is not vacuous: adding a symbol to one entry of the right side breaks each step."""
    import sympy as sp

    from mechinterp_edu.derivations import Step, prove
    from mechinterp_edu.lessons.max_of_k.derivations import CIRCUITS, FACTORS

    eps = sp.Symbol("epsilon")
    for step in CIRCUITS.steps + FACTORS.steps:
        if step.method != "matrix" or step.name == "logits":
            continue

        def rhs(step=step):
            R = sp.Matrix(step.rhs())
            R[0, 0] = R[0, 0] + eps
            return R
        passed, detail = prove(Step(step.name, step.statement, step.lhs, rhs, "matrix"))
        assert not passed and "epsilon" in detail, step.name


def test_one_hot_rows_sum_step_is_the_one_the_notes_needed():
    """Check the row-sum step numerically on every one-hot matrix of a small vocabulary."""
    import itertools

    P_avg = torch.randn(1, 5, dtype=torch.float64)
    for tokens in itertools.product(range(4), repeat=3):
        x = torch.nn.functional.one_hot(torch.tensor(tokens), 4).double()
        assert torch.allclose(x @ (torch.ones(4, 1, dtype=torch.float64) @ P_avg),
                              torch.ones(3, 1, dtype=torch.float64) @ P_avg)
        assert torch.linalg.matrix_rank(x) <= 3 < 4                    # never invertible (3 x 4)


# --------------------------------------------------------------------------- lesson source and live charts
def test_lesson_references_resolve_and_show_every_step():
    from mechinterp_edu.derivations import get_derivation
    from mechinterp_edu.lessons.max_of_k.derivations import CIRCUITS, FACTORS
    from mechinterp_edu.grader.spec import exercises_for
    from mechinterp_edu.lesson_source import load_lesson
    from mechinterp_edu.live import get_chart

    lesson = load_lesson(4)
    assert lesson.title == LESSON.title
    shown = set()
    for r in lesson.refs("derivation"):
        name, _, step = r.partition(":")
        d = get_derivation(name)
        shown |= {(name, s.name) for s in d.steps} if not step else {(name, d.step(step).name)}
    assert {(d.name, s.name) for d in (CIRCUITS, FACTORS) for s in d.steps} <= shown
    for r in lesson.refs("chart"):
        assert get_chart(r).name.startswith("max_of_k.")
    names = {e.name for e in exercises_for(4)}
    assert set(lesson.refs("exercise")) == names
    for control in lesson.controls:
        if control["kind"] == "bool":
            assert control["name"].removeprefix("bug_") in {**bug_lab.CIRCUIT_BUGS, **bug_lab.TRAINING_BUGS}


def test_lesson_code_cells_run_in_order(capsys):
    from mechinterp_edu.lesson_source import load_lesson

    namespace: dict = {}
    for code in load_lesson(4).refs("code"):
        exec(compile(code, "lesson04", "exec"), namespace)
    assert namespace["result"].accuracy > 0.999


def _kinds(output) -> list[str]:
    import altair as alt
    import pandas as pd

    from mechinterp_edu.derivations import StepResult

    items = output if isinstance(output, list) else [output]
    kinds = []
    for item in items:
        if isinstance(item, (alt.TopLevelMixin,)):
            kinds.append("chart")
        elif isinstance(item, pd.DataFrame):
            kinds.append("frame")
        elif isinstance(item, str):
            kinds.append("markdown")
        elif isinstance(item, dict):
            kinds.append("metrics")
        elif isinstance(item, StepResult):
            kinds.append("step")
        else:
            raise AssertionError(f"unexpected live output {type(item)}")
    return kinds


def test_live_charts_run_on_defaults_and_on_the_untrained_model():
    from mechinterp_edu.live import compute
    from mechinterp_edu.lesson_source import load_lesson

    for name in load_lesson(4).refs("chart"):
        kinds = _kinds(compute(name))
        assert kinds, name
    assert "chart" in _kinds(compute("max_of_k.circuit_grid", {"model": "untrained", "scale": "per table"}))
    svd = compute("max_of_k.svd", {"model": "untrained"})[0]
    assert svd["sigma1 / sigma2"] < 10                 # an untrained EQKE is not rank one
    steps = compute("max_of_k.notes_steps")
    assert steps and not any(s.passed for s in steps)


def test_live_scores_check_agrees_and_explains_bad_prompts():
    from mechinterp_edu.live import compute

    metrics, frame = compute("max_of_k.scores_check", {"prompt": "3 60 17 9"})
    assert metrics["max |score difference|"] < 1e-5 and metrics["max |logit difference|"] < 1e-4
    assert metrics["model's answer"] == metrics["max token"] == 60
    assert list(frame["token"]) == [3, 60, 17, 9]
    for bad in ("1 2 3", "1 2 3 99", "a b c d"):
        message = compute("max_of_k.scores_check", {"prompt": bad})
        assert isinstance(message, str) and ("exactly 4 tokens" in message or "whole numbers" in message), message


def test_bug_lab_toggles_show_their_symptoms():
    from mechinterp_edu.live import compute
    from mechinterp_edu.lessons.max_of_k.charts import bug_lab_state

    clean = bug_lab_state({})
    assert clean["EQKE ratio"] == pytest.approx(1) and clean["EQKP ratio"] == pytest.approx(1)
    scaled = bug_lab_state({"bug_divide_by_d_head": True})
    assert scaled["EQKE ratio"] == pytest.approx(1 / math.sqrt(32))
    raw = bug_lab_state({"bug_raw_pos_in_eqkp": True})
    assert raw["EQKP ratio"] > 10 and raw["logit change from the circuit bugs"] < 1e-9
    # training bugs retrain the model (a short run here)
    last = bug_lab_state({"bug_last_token_target": True, "lab_steps": 150})
    assert last["EU diagonal (lab)"] >= 0.9 > 0.5 > last["EU diagonal (correct)"]
    assert last["accuracy on max (lab model)"] < 0.5
    sqrt_d = bug_lab_state({"bug_sqrt_d_multiplier": True, "lab_steps": 150})
    assert sqrt_d["EQKE ratio"] < 0.3
    out = compute("max_of_k.bug_lab", {"bug_divide_by_d_head": True, "bug_raw_pos_in_eqkp": True})
    assert _kinds(out) == ["markdown", "metrics", "chart", "chart"]     # buggy grid above the correct one
    assert "d_head instead of sqrt" in out[0]


# --------------------------------------------------------------------------- grader
def _grade_source():
    from mechinterp_edu.course import ROOT
    if not (ROOT / "mechinterp_edu" / "grader" / "grade.py").exists():
        pytest.fail("mechinterp_edu/grader/grade.py is missing")
    from mechinterp_edu.grader.grade import grade_source
    return grade_source


SUBMISSION = '''
import math
import torch

MDP = {mdp!r}
QUERY = {query!r}
KEY = {key!r}
SCALE = {scale!r}
SWAP = {swap!r}
EQKP_POS = {eqkp_pos!r}
EU_QUERY = {eu_query!r}
EVOU_EMB = {evou_emb!r}
OV_ORDER = {ov_order!r}
PVOU_POS = {pvou_pos!r}
LOGITS = {logits!r}
RANK = {rank!r}
CIRCUIT_BUGS = {circuit_bugs!r}
LOSS_BUGS = {loss_bugs!r}
LOSS_POSITION = {loss_position!r}


def mean_diff_positions(W_pos):
    if MDP == "axis":
        avg = W_pos.mean(1)
        return avg, W_pos - avg[:, None]
    avg = {{"mean": W_pos.mean(0), "sum": W_pos.sum(0), "last": W_pos[-1], "raw": W_pos.mean(0)}}[MDP]
    return avg, (W_pos if MDP == "raw" else W_pos - avg)


def _emb(kind, W_E, W_pos):
    return {{"E_q": W_E + W_pos[-1], "E": W_E, "E_first": W_E + W_pos[0],
            "E_bar": W_E + W_pos.mean(0), "P_hat": W_pos - W_pos.mean(0), "W_pos": W_pos}}[kind]


def _scale(d):
    return {{"sqrt": 1 / math.sqrt(d), "d": 1 / d, "none": 1.0, "times": math.sqrt(d)}}[SCALE]


def eqke(W_E, W_pos, W_Q, W_K):
    out = _emb(QUERY, W_E, W_pos) @ W_Q @ W_K.T @ _emb(KEY, W_E, W_pos).T * _scale(W_Q.shape[1])
    return out.T if SWAP else out


def eqkp(W_E, W_pos, W_Q, W_K):
    return _emb(QUERY, W_E, W_pos) @ W_Q @ W_K.T @ _emb(EQKP_POS, W_E, W_pos).T * _scale(W_Q.shape[1])


def eu(W_E, W_pos, W_U):
    return _emb(EU_QUERY, W_E, W_pos) @ W_U


def _ov(W_V, W_O):
    return W_V @ W_O if OV_ORDER == "VO" else W_O @ W_V


def evou(W_E, W_pos, W_V, W_O, W_U):
    return _emb(EVOU_EMB, W_E, W_pos) @ _ov(W_V, W_O) @ W_U


def pvou(W_pos, W_V, W_O, W_U):
    positions = W_pos if PVOU_POS == "W_pos" else W_pos - W_pos.mean(0)
    return positions @ _ov(W_V, W_O) @ W_U


def logits_from_circuits(tokens, W_E, W_pos, W_Q, W_K, W_V, W_O, W_U):
    d = W_Q.shape[1]
    E_q, E_bar = W_E + W_pos[-1], W_E + W_pos.mean(0)
    keys_pos = W_pos if LOGITS == "raw_pos" else W_pos - W_pos.mean(0)
    EQKE = E_q @ W_Q @ W_K.T @ E_bar.T / math.sqrt(d)
    EQKP = E_q @ W_Q @ W_K.T @ keys_pos.T / math.sqrt(d)
    EVOU = E_bar @ W_V @ W_O @ W_U
    PVOU = (W_pos - W_pos.mean(0)) @ W_V @ W_O @ W_U
    EU = E_q @ W_U
    out = []
    for row in tokens.tolist():
        q = row[0] if LOGITS == "first_query" else row[-1]
        s = torch.stack([EQKE[q, t] + (0 if LOGITS == "no_eqkp" else EQKP[q, i]) for i, t in enumerate(row)])
        if LOGITS == "scaled_twice":
            s = s / math.sqrt(d)
        a = s if LOGITS == "no_softmax" else torch.softmax(s, 0)
        value = sum(a[i] * (EVOU[t] + (0 if LOGITS == "no_pvou" else PVOU[i])) for i, t in enumerate(row))
        out.append(value + (0 if LOGITS == "no_direct" else EU[row[-1]]))
    result = torch.stack(out)
    if LOGITS == "batch_softmax":
        scores = EQKE[tokens[:, -1:], tokens] + EQKP[tokens[:, -1]]
        a = torch.softmax(scores, 0)
        result = EU[tokens[:, -1]] + torch.einsum("bi,biv->bv", a, EVOU[tokens] + PVOU)
    return result


def eqke_rank_one(eqke):
    M = eqke.double()
    U, S, Vh = torch.linalg.svd(M)
    v, u = Vh[0], U[:, 0]
    idx = torch.arange(len(v), dtype=M.dtype)
    if torch.dot(v, idx - idx.mean()) < 0:
        v, u = -v, -u
    ratio = float(S[0] / S[1])
    if RANK == "inverse":
        ratio = 1 / ratio
    if RANK == "flipped":
        v, u = -v, -u
    if RANK == "query_sign":
        u = -u
    if RANK == "swapped":
        v, u = u, v
    return ratio, v.to(eqke.dtype), u.to(eqke.dtype)


def debug_circuits(W_E, W_pos, W_Q, W_K, W_V, W_O, W_U):
    d = W_Q.shape[1]
    scale = d if "divide_by_d_head" in CIRCUIT_BUGS else math.sqrt(d)
    E_q = W_E if "drop_query_pos" in CIRCUIT_BUGS else W_E + W_pos[-1]
    E_bar = W_E + W_pos.mean(0)
    P_hat = W_pos - W_pos.mean(0)
    keys = W_pos if "raw_pos_in_eqkp" in CIRCUIT_BUGS else P_hat
    qk, ovu = W_Q @ W_K.T, W_V @ W_O @ W_U
    return (E_q @ qk @ E_bar.T / scale, E_q @ qk @ keys.T / scale, E_q @ W_U, E_bar @ ovu, P_hat @ ovu)


def debug_training_loss(tokens, W_E, W_pos, W_Q, W_K, W_V, W_O, W_U):
    n, d = tokens.shape[1], W_Q.shape[1]
    x = W_E[tokens] + W_pos[:n]
    s = (x @ W_Q) @ (x @ W_K).transpose(1, 2)
    s = s * math.sqrt(d) if "sqrt_d_multiplier" in LOSS_BUGS else s / math.sqrt(d)
    s = s.masked_fill(torch.ones(n, n, dtype=torch.bool).triu(1), float("-inf"))
    x = x + torch.softmax(s, -1) @ (x @ W_V) @ W_O
    pos = 0 if LOSS_POSITION == "first" else -1
    if LOSS_POSITION == "first":
        x = W_E[tokens] + W_pos[:n]
    target = tokens[:, -1] if "last_token_target" in LOSS_BUGS else tokens.max(1).values
    return torch.nn.functional.cross_entropy(x[:, pos] @ W_U, target)
'''

CORRECT = dict(mdp="mean", query="E_q", key="E_bar", scale="sqrt", swap=False, eqkp_pos="P_hat",
               eu_query="E_q", evou_emb="E_bar", ov_order="VO", pvou_pos="P_hat", logits="ok", rank="ok",
               circuit_bugs=(), loss_bugs=(), loss_position="last")

MISTAKES = [  # (exercise, words the feedback must contain, knobs)
    ("mean_diff_positions", "P_hat not centred", dict(mdp="raw")),
    ("mean_diff_positions", "sum instead of mean", dict(mdp="sum")),
    ("mean_diff_positions", "last position instead of the mean", dict(mdp="last")),
    ("eqke", "divided by d_head", dict(scale="d")),
    ("eqke", "no 1/sqrt(d_head) scale", dict(scale="none")),
    ("eqke", "sqrt(d_head) multiplied", dict(scale="times")),
    ("eqke", "dropped the query's positional term", dict(query="E")),
    ("eqke", "keys without P_avg", dict(key="E")),
    ("eqke", "query at the first position", dict(query="E_first")),
    ("eqke", "E_q on the key side", dict(key="E_q")),
    ("eqke", "E_bar on the query side", dict(query="E_bar")),
    ("eqke", "query and key swapped", dict(swap=True)),
    ("eqkp", "raw W_pos in EQKP", dict(eqkp_pos="W_pos")),
    ("eqkp", "divided by d_head", dict(scale="d")),
    ("eqkp", "sqrt(d_head) multiplied", dict(scale="times")),
    ("eqkp", "dropped the query's positional term", dict(query="E")),
    ("eu", "dropped the query's positional term", dict(eu_query="E")),
    ("eu", "E_bar on the query side", dict(eu_query="E_bar")),
    ("evou", "EVOU without P_avg", dict(evou_emb="E")),
    ("evou", "E_q in EVOU", dict(evou_emb="E_q")),
    ("pvou", "raw W_pos in PVOU", dict(pvou_pos="W_pos")),
    ("logits_from_circuits", "no softmax", dict(logits="no_softmax")),
    ("logits_from_circuits", "softmax over the batch", dict(logits="batch_softmax")),
    ("logits_from_circuits", "missing PVOU", dict(logits="no_pvou")),
    ("logits_from_circuits", "missing the direct path", dict(logits="no_direct")),
    ("logits_from_circuits", "missing EQKP", dict(logits="no_eqkp")),
    ("logits_from_circuits", "scaled twice", dict(logits="scaled_twice")),
    ("logits_from_circuits", "query is the first token", dict(logits="first_query")),
    ("eqke_rank_one", "inverse ratio", dict(rank="inverse")),
    ("eqke_rank_one", "left and right swapped", dict(rank="swapped")),
    ("eqke_rank_one", "size direction has the opposite sign", dict(rank="flipped")),
    ("eqke_rank_one", "query direction has the opposite sign", dict(rank="query_sign")),
    ("debug_circuits", "3 bugs left", dict(circuit_bugs=("divide_by_d_head", "drop_query_pos", "raw_pos_in_eqkp"))),
    ("debug_circuits", "1 bug left: scores divided by d_head", dict(circuit_bugs=("divide_by_d_head",))),
    ("debug_circuits", "1 bug left: EQKP built from raw W_pos", dict(circuit_bugs=("raw_pos_in_eqkp",))),
    ("debug_circuits", "2 bugs left: query embedded as W_E",
     dict(circuit_bugs=("drop_query_pos", "raw_pos_in_eqkp"))),
    ("debug_training_loss", "2 bugs left", dict(loss_bugs=("last_token_target", "sqrt_d_multiplier"))),
    ("debug_training_loss", "1 bug left: trained to predict the last token",
     dict(loss_bugs=("last_token_target",))),
    ("debug_training_loss", "1 bug left: attention scores multiplied by sqrt(d_head)",
     dict(loss_bugs=("sqrt_d_multiplier",))),
    ("debug_training_loss", "logits of the first position", dict(loss_position="first")),
]


def test_grader_gives_solutions_full_marks_and_stubs_zero():
    grade_source = _grade_source()
    report = grade_source(LESSON.solution_path.read_text(encoding="utf-8"), 4, sandbox=False)
    assert len(report.results) == 14          # 10 on the circuits, 4 on the proofs (part 7)
    for r in report.results:
        assert r.passed and r.score == r.max_score, (r.exercise, r.feedback)
    report = grade_source(LESSON.exercise_path.read_text(encoding="utf-8"), 4, sandbox=False)
    for r in report.results:
        assert not r.passed and r.score == 0 and "not implemented" in r.feedback, (r.exercise, r.feedback)


def test_correct_template_passes_and_the_invisible_bug_passes_logits():
    grade_source = _grade_source()
    from mechinterp_edu.grader.spec import exercises_for
    from mechinterp_edu.lessons.max_of_k.proof_exercises import PROOF_EXERCISES

    proofs = {e.name for e in PROOF_EXERCISES}          # not in this template: test_lesson04_proof_exercises
    circuits = [e.name for e in exercises_for(4) if e.name not in proofs]
    report = grade_source(SUBMISSION.format(**CORRECT), 4, exercises=circuits, sandbox=False)
    assert len(report.results) == len(circuits)
    for r in report.results:
        assert r.passed, (r.exercise, r.feedback)
    # raw W_pos inside logits_from_circuits: softmax ignores the per-row constant, so the
    # logits are right and a logits-only check (this exercise) cannot see it; eqkp can.
    report = grade_source(SUBMISSION.format(**{**CORRECT, "logits": "raw_pos"}), 4,
                          exercises=["logits_from_circuits"], sandbox=False)
    assert report.results[0].passed, report.results[0].feedback


@pytest.mark.parametrize("exercise,words,knobs", MISTAKES, ids=[f"{e}:{w}" for e, w, _ in MISTAKES])
def test_grader_names_each_catalogued_mistake(exercise, words, knobs):
    grade_source = _grade_source()
    report = grade_source(SUBMISSION.format(**{**CORRECT, **knobs}), 4, exercises=[exercise], sandbox=False)
    (result,) = report.results
    assert not result.passed and result.score == 0
    assert words.lower() in result.feedback.lower(), f"expected {words!r} in:\n{result.feedback}"


def test_catalogue_names_the_issues_factors_and_every_mistake_differs():
    from mechinterp_edu.grader.spec import exercises_for

    from mechinterp_edu.lessons.max_of_k.proof_exercises import PROOF_EXERCISES

    proofs = {e.name for e in PROOF_EXERCISES}       # their cases and diagnoses: test_lesson04_proof_exercises
    exercises = {e.name: e for e in exercises_for(4) if e.name not in proofs}
    text = " ".join(m.message for e in exercises.values() for m in e.mistakes)
    for factor in ("0.177", "sqrt(d_head)", "15-25x", "EQKE is 0.1x expected", "EQKP is 10x expected"):
        assert factor in text, factor
    for ex in exercises.values():
        cases = ex.cases()
        labels = " ".join(c.label for c in cases)
        assert "float32" in labels and "float64" in labels and "trained" in labels, ex.name
        for m in ex.mistakes:
            differs = False
            for case in cases:
                try:
                    got, want = m.fn(*case.args), ex.reference(*case.args)
                except Exception:  # noqa: BLE001 - a variant that cannot run differs
                    differs = True
                    break
                got = got if isinstance(got, tuple) else (got,)
                want = want if isinstance(want, tuple) else (want,)
                for g, w in zip(got, want):
                    g, w = torch.as_tensor(g, dtype=torch.float64), torch.as_tensor(w, dtype=torch.float64)
                    if g.shape != w.shape or float((g - w).abs().max()) > 1e-3 * max(1.0, float(w.abs().max())):
                        differs = True
                if differs:
                    break
            assert differs, f"{ex.name}: mistake {m.name!r} equals the reference on every case"


def test_sandboxed_grading_of_the_solutions():
    grade_source = _grade_source()
    report = grade_source(LESSON.solution_path.read_text(encoding="utf-8"), 4,
                          exercises=["eqke", "logits_from_circuits", "eqke_rank_one"], sandbox=True)
    for r in report.results:
        assert r.passed, (r.exercise, r.feedback)


def test_charts_fit_a_1440px_screen_and_the_log_chart_draws_marks():
    """Rendered with vl_convert: no lesson-4 grid wider than 720 px (it sits beside the sidebar on a
    1440 px screen), and the log-scale singular values are drawn (a bar on a log axis draws nothing)."""
    import re

    import vl_convert as vlc

    from mechinterp_edu.live import compute

    def widths(out):
        items = out if isinstance(out, list) else [out]
        svgs = [vlc.vegalite_to_svg(i.to_json()) for i in items if hasattr(i, "to_json")]
        return [float(re.search(r'width="([\d.]+)"', s).group(1)) for s in svgs], svgs

    for name, ctx in (("max_of_k.circuit_grid", {}), ("max_of_k.bug_lab", {"bug_raw_pos_in_eqkp": True}),
                      ("max_of_k.cubic_map", {}), ("max_of_k.svd", {})):
        ws, _ = widths(compute(name, ctx))
        assert ws and max(ws) <= 720, (name, ws)
    _, svgs = widths(compute("max_of_k.svd", {}))
    assert "mark-symbol" in svgs[0] and svgs[0].count("<path") >= 12, "the singular values are not drawn"
