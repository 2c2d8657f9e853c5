"""Lesson 2 (QK and OV circuits): reference == worked solutions == the model's own forward pass,
eigenvalue copying scores, sympy derivations, lesson source, live charts and grading.

Truths from the model itself (hooks on a boot_native bridge or the trained checkpoint):
* full QK: feed every token alone with the positional embedding zeroed (``hook_pos_embed``);
  q.k from ``hook_q``/``hook_k`` is then exactly the token-token table;
* positional QK: zero the token embedding (``hook_embed``) instead;
* full OV: with positions zeroed and every other head's pattern zeroed (``hook_pattern``), the
  logits of a one-token prompt minus those with all patterns zeroed are one OV row per token;
* copying score: three implementations (FactoredMatrix, full eigvals in the solution, numpy on
  the model-derived OV) and hand-built heads whose score is known exactly.
"""
from __future__ import annotations

import math

import numpy as np
import pytest
from support import import_file
import torch

from mechinterp_edu.course import get_lesson
from mechinterp_edu.lessons.qk_ov_circuits import reference as ref
from mechinterp_edu.lessons.tensor_products import reference as tp

LESSON = get_lesson(2)
TOL = 1e-6
SHAPES = {
    **{name: (shape, 0) for name, shape in tp.TOY_SHAPES.items()},
    "5h-dhead3": (dict(d_vocab=17, d_model=15, n_heads=5, d_head=3, n_ctx=9), 7),
    "dhead>dvocab": (dict(d_vocab=6, d_model=16, n_heads=4, d_head=8, n_ctx=5), 2),
}


pytestmark = pytest.mark.usefixtures("one_torch_thread")




@pytest.fixture(scope="module")
def sol():
    return import_file(LESSON.solution_path, "_lesson02_solutions")


@pytest.fixture(scope="module")
def stub():
    return import_file(LESSON.exercise_path, "_lesson02_exercises")


@pytest.fixture(scope="module")
def random_models():
    return {name: tp.random_toy_model(shape, seed=seed, dtype=torch.float64) for name, (shape, seed) in SHAPES.items()}


@pytest.fixture(scope="module")
def trained():
    try:
        from mechinterp_edu.models.zoo import load_model
        return load_model("skip_trigrams", device="cpu", dtype=torch.float64)
    except Exception as exc:  # noqa: BLE001
        pytest.skip(f"trained skip_trigrams checkpoint not loadable here: {type(exc).__name__}: "
                    f"{str(exc).splitlines()[0] if str(exc) else ''}")


# --------------------------------------------------------------------------- truths from the model
def _zero(t, hook):
    return torch.zeros_like(t)


def _qk_from_model(model, tokens, zero_hook):
    caught = {}

    def grab(name):
        def fn(t, hook):
            caught[name] = t.detach().clone()
            return t
        return fn
    model.run_with_hooks(tokens, fwd_hooks=[(zero_hook, _zero), ("blocks.0.attn.hook_q", grab("q")),
                                            ("blocks.0.attn.hook_k", grab("k"))])
    return caught["q"], caught["k"]                     # [batch, pos, head, d_head]


def model_full_qk(model):
    tokens = torch.arange(model.cfg.d_vocab)[:, None]   # every token alone, at position 0
    q, k = _qk_from_model(model, tokens, "hook_pos_embed")
    return torch.einsum("ahd,bhd->hab", q[:, 0], k[:, 0])


def model_positional_qk(model):
    tokens = torch.zeros(1, model.cfg.n_ctx, dtype=torch.long)
    q, k = _qk_from_model(model, tokens, "hook_embed")
    return torch.einsum("ahd,bhd->hab", q[0], k[0])


def model_full_ov(model):
    tokens = torch.arange(model.cfg.d_vocab)[:, None]
    with torch.no_grad():
        base = model.run_with_hooks(tokens, fwd_hooks=[("hook_pos_embed", _zero),
                                                       ("blocks.0.attn.hook_pattern", _zero)])
        rows = []
        for h in range(model.cfg.n_heads):
            def only(t, hook, h=h):
                out = torch.zeros_like(t)
                out[:, h] = t[:, h]
                return out
            logits = model.run_with_hooks(tokens, fwd_hooks=[("hook_pos_embed", _zero),
                                                             ("blocks.0.attn.hook_pattern", only)])
            rows.append((logits - base)[:, 0])
    return torch.stack(rows)


def _weights(model):
    w = tp.model_weights(model, dtype=torch.float64)
    assert all(bool((w[b] == 0).all()) for b in ("b_Q", "b_K", "b_V", "b_O", "b_U"))
    return w


def _check_model(model, sol):
    w = _weights(model)
    errors = {}
    truths = {"full_qk_circuit": (model_full_qk(model), ("W_E", "W_Q", "W_K")),
              "positional_qk": (model_positional_qk(model), ("W_pos", "W_Q", "W_K")),
              "full_ov_circuit": (model_full_ov(model), ("W_E", "W_V", "W_O", "W_U"))}
    for name, (truth, keys) in truths.items():
        for who, fn in (("reference", getattr(ref, name)), ("solution", getattr(sol, name))):
            got = fn(*[w[k] for k in keys])
            assert got.shape == truth.shape and got.dtype == torch.float64, (name, who, got.shape)
            errors[f"{who} {name} vs model"] = tp.relative_error(got, truth)
    # copying score: reference (FactoredMatrix), solution (full eigvals), numpy on the model's own OV
    ov_model = truths["full_ov_circuit"][0].detach().numpy()
    eig = np.linalg.eigvals(ov_model)
    numpy_score = torch.tensor(eig.sum(-1).real / np.abs(eig).sum(-1))
    args = [w[k] for k in ("W_E", "W_V", "W_O", "W_U")]
    for who, fn in (("reference", ref.copying_score), ("solution", sol.copying_score)):
        got = fn(*args)
        assert got.shape == (model.cfg.n_heads,) and got.dtype == torch.float64 and not got.is_complex()
        errors[f"{who} copying_score vs numpy(model OV)"] = tp.relative_error(got, numpy_score)
    bad = {k: v for k, v in errors.items() if not v <= TOL}
    assert not bad, f"relative errors above {TOL}: {bad}"
    return errors


# --------------------------------------------------------------------------- numerics vs the model
@pytest.mark.parametrize("name", list(SHAPES))
def test_reference_and_solution_equal_the_model_random(name, random_models, sol):
    _check_model(random_models[name], sol)


def test_reference_and_solution_equal_the_model_trained(trained, sol):
    errors = _check_model(trained, sol)
    assert max(errors.values()) <= TOL


def test_prompt_scores_are_the_four_bilinear_terms(random_models):
    """q.k of the model on a prompt (positions included) = token-token + cross terms + pos-pos;
    token-token is the full QK read at the prompt's pairs, pos-pos the positional QK block."""
    model = random_models["random-8h"]
    w = _weights(model)
    tokens = torch.tensor([3, 1, 4, 1, 5, 9, 2, 6, 5, 3])
    _, cache = model.run_with_cache(tokens[None])
    q, k = cache["blocks.0.attn.hook_q"][0], cache["blocks.0.attn.hook_k"][0]
    scores = torch.einsum("qhd,khd->hqk", q, k)
    parts = ref.qk_score_decomposition(tokens, w["W_E"], w["W_pos"], w["W_Q"], w["W_K"])
    assert tp.relative_error(sum(parts.values()), scores) <= TOL
    full = ref.full_qk_circuit(w["W_E"], w["W_Q"], w["W_K"])
    assert tp.relative_error(parts["token-token"], full[:, tokens][:, :, tokens]) <= TOL
    n = len(tokens)
    assert tp.relative_error(parts["position-position"],
                             ref.positional_qk(w["W_pos"], w["W_Q"], w["W_K"])[:, :n, :n]) <= TOL
    # scaled and masked, the sum gives the model's own pattern
    masked = (scores / math.sqrt(q.shape[-1])).masked_fill(torch.ones(n, n, dtype=torch.bool).triu(1), -math.inf)
    assert tp.relative_error(torch.softmax(masked, -1), cache["blocks.0.attn.hook_pattern"][0]) <= TOL


def test_circuits_are_low_rank_and_factored_matrix_agrees(random_models):
    from transformer_lens import FactoredMatrix
    for name in ("random-4h", "random-8h", "5h-dhead3"):
        w = _weights(random_models[name])
        d_head = w["W_Q"].shape[-1]
        qk = ref.full_qk_circuit(w["W_E"], w["W_Q"], w["W_K"])
        ov = ref.full_ov_circuit(w["W_E"], w["W_V"], w["W_O"], w["W_U"])
        assert qk.shape[-1] > d_head
        assert int(torch.linalg.matrix_rank(qk).max()) <= d_head
        assert int(torch.linalg.matrix_rank(ov).max()) <= d_head
        assert tp.relative_error(ref.qk_factored(w["W_E"], w["W_Q"], w["W_K"]).AB, qk) <= 1e-12
        assert tp.relative_error(ref.ov_factored(w["W_E"], w["W_V"], w["W_O"], w["W_U"]).AB, ov) <= 1e-12
        # nonzero eigenvalues of AB are those of BA (compare sorted moduli)
        small = FactoredMatrix(w["W_E"] @ w["W_V"][0], w["W_O"][0] @ w["W_U"]).eigenvalues
        big = torch.linalg.eigvals(ov[0])
        top = big.abs().sort(descending=True).values[:d_head]
        assert torch.allclose(small.abs().sort(descending=True).values, top, rtol=1e-8, atol=1e-10)


def _hand_built(ov_block: torch.Tensor):
    """Weights whose full OV circuit is exactly ``ov_block`` (one head, identity embeddings)."""
    n = ov_block.shape[0]
    eye = torch.eye(n, dtype=torch.float64)
    return eye, eye[None], ov_block[None].clone(), eye


@pytest.mark.parametrize("block,expected", [
    (2.5 * torch.eye(3, dtype=torch.float64), 1.0),                         # pure copying
    (-torch.eye(3, dtype=torch.float64), -1.0),                              # pure suppression
    (torch.tensor([[0.0, -1.0], [1.0, 0.0]], dtype=torch.float64), 0.0),    # rotation: eigenvalues +-i
    (torch.diag(torch.tensor([3.0, -1.0], dtype=torch.float64)), 0.5),      # (3 - 1) / (3 + 1)
    (torch.zeros(3, 3, dtype=torch.float64), 0.0),                          # all eigenvalues zero
])
def test_copying_score_on_heads_with_known_spectrum(block, expected, sol):
    args = _hand_built(block)
    for fn in (ref.copying_score, sol.copying_score):
        got = fn(*args)
        assert got.shape == (1,) and abs(float(got[0]) - expected) < 1e-12, (fn.__module__, got)


def test_copying_score_handles_complex_eigenvalues_and_float32(random_models, sol):
    w = _weights(random_models["random-8h"])
    eig = ref.ov_eigenvalues(w["W_E"], w["W_V"], w["W_O"], w["W_U"])
    assert eig.is_complex() and bool((eig.imag.abs() > 1e-6).any()), "random OV circuits have complex eigenvalues"
    args32 = [w[k].float() for k in ("W_E", "W_V", "W_O", "W_U")]
    ref32, sol32 = ref.copying_score(*args32), sol.copying_score(*args32)
    assert ref32.dtype == torch.float32 and sol32.dtype == torch.float32
    ref64 = ref.copying_score(*[w[k] for k in ("W_E", "W_V", "W_O", "W_U")])
    assert float((ref32.double() - ref64).abs().max()) < 1e-4
    assert float((sol32.double() - ref64).abs().max()) < 1e-4
    assert bool(((ref64 >= -1) & (ref64 <= 1)).all())


def test_top_token_pairs_reads_the_largest_entries():
    M = torch.tensor([[0.0, 5.0, 1.0], [2.0, -3.0, 4.0]])
    assert ref.top_token_pairs(M, 3) == [(0, 1, 5.0), (1, 2, 4.0), (1, 0, 2.0)]
    assert ref.top_token_pairs(M, 1, largest=False) == [(1, 1, -3.0)]
    with pytest.raises(ValueError, match="2-D"):
        ref.top_token_pairs(torch.zeros(2, 2, 2), 3)


def test_bad_shapes_get_clear_messages():
    with pytest.raises(ValueError, match="W_Q"):
        ref.full_qk_circuit(torch.zeros(4, 3), torch.zeros(2, 5, 2), torch.zeros(2, 5, 2))
    with pytest.raises(ValueError, match="3-D"):
        ref.full_ov_circuit(torch.zeros(4, 3), torch.zeros(3, 2), torch.zeros(2, 2, 3), torch.zeros(3, 4))


# --------------------------------------------------------------------------- derivations
DERIVATIONS = ("qk_ov_circuits.qk", "qk_ov_circuits.rank", "qk_ov_circuits.ov", "qk_ov_circuits.eigen")


def _lesson_derivations():
    import mechinterp_edu.lessons.qk_ov_circuits.derivations  # noqa: F401  (registers lesson 2's derivations)
    from mechinterp_edu.derivations import framework
    return [d for d in framework.all_derivations() if d.lesson == 2]


def test_every_derivation_step_proves():
    from mechinterp_edu.derivations.framework import check
    derivations = _lesson_derivations()
    assert {d.name for d in derivations} == set(DERIVATIONS)
    failed = [(r.derivation, r.step, r.detail) for d in derivations for r in check(d) if not r.passed]
    assert not failed, failed


def _false_steps():
    from itertools import combinations

    import sympy as sp

    from mechinterp_edu.lessons.qk_ov_circuits import derivations as D
    from mechinterp_edu.derivations.framework import Step, symbolic_matrix

    E, Q, K = symbolic_matrix("E", 3, 3), symbolic_matrix("Q", 3, 2), symbolic_matrix("K", 3, 2)
    U, V, O = symbolic_matrix("U", 3, 3), symbolic_matrix("V", 3, 2), symbolic_matrix("O", 2, 3)
    A, B = symbolic_matrix("a", 3, 2), symbolic_matrix("b", 2, 3)
    lam = sp.Symbol("lambda")
    s = sp.symbols("s0:3", real=True)
    f = sp.Symbol("f", real=True)

    def rank_one_minors():      # 2x2 minors of a rank-2 product do not vanish
        P = symbolic_matrix("u", 4, 2) * symbolic_matrix("w", 4, 2).T
        m = [P.extract(list(r), list(c)).det() for r in combinations(range(4), 2) for c in combinations(range(4), 2)]
        return sp.Matrix(m)

    return [
        Step("paper QK is the transpose", "", lambda: E * Q * K.T * E.T, lambda: (E * Q * K.T * E.T).T, "matrix"),
        Step("paper OV without transpose", "", lambda: U.T * (O.T * V.T) * E.T, lambda: E * V * O * U, "matrix"),
        Step("OV factors in the paper order", "", lambda: E * V * O * U, lambda: (U.T * O.T) * (V.T * E.T), "matrix"),
        Step("rank <= 1 through a width-2 bottleneck", "", rank_one_minors, lambda: sp.zeros(36, 1), "matrix"),
        Step("charpoly of AB equals that of BA without lambda", "",
             lambda: sp.Matrix([[(lam * sp.eye(3) - A * B).det(method="berkowitz")]]),
             lambda: sp.Matrix([[(lam * sp.eye(2) - B * A).det(method="berkowitz")]]), "matrix"),
        Step("a key-dependent shift is harmless", "", lambda: D.softmax([s[0] + f, s[1], s[2]]),
             lambda: D.softmax(list(s)), "simplify"),
        Step("trace of a product is the product of traces", "", lambda: (A * B).trace(),
             lambda: A[:2, :2].trace() * B[:2, :2].trace(), "simplify"),
    ]


@pytest.mark.parametrize("index", range(7))
def test_deliberately_false_steps_fail(index):
    from mechinterp_edu.derivations.framework import Derivation, check_step
    step = _false_steps()[index]
    result = check_step(Derivation("test.false", "false", (step,)), step)
    assert not result.passed, f"{step.name} should not prove, got: {result.detail}"


# --------------------------------------------------------------------------- lesson source
def test_lesson_source_is_this_lesson_with_its_exercises():
    """What is particular to lesson 2; reference resolution, shown steps and controls are checked
    for every lesson in test_platform_lessons.py."""
    from mechinterp_edu.grader.spec import exercises_for
    from mechinterp_edu.lesson_source import load_lesson

    lesson = load_lesson(2)
    assert lesson.title == LESSON.title
    assert set(lesson.refs("exercise")) == {ex.name for ex in exercises_for(2)} == {
        "full_qk_circuit", "full_ov_circuit", "positional_qk", "copying_score"}


def test_lesson_code_cells_run_in_order(capsys):
    from mechinterp_edu.lesson_source import load_lesson
    namespace: dict = {}
    for i, code in enumerate(load_lesson(2).refs("code")):
        exec(compile(code, f"lesson02 cell {i}", "exec"), namespace)  # noqa: S102
    out = capsys.readouterr().out
    assert "True" in out and "False" not in out
    assert float(out.split("max |fast - slow|:")[1].split()[0]) < 1e-8


def test_stubs_raise_not_implemented(stub):
    w = tp.random_weights(5, 4, 2, 2, 3)
    calls = {"full_qk_circuit": ("W_E", "W_Q", "W_K"), "full_ov_circuit": ("W_E", "W_V", "W_O", "W_U"),
             "positional_qk": ("W_pos", "W_Q", "W_K"), "copying_score": ("W_E", "W_V", "W_O", "W_U")}
    for name, keys in calls.items():
        with pytest.raises(NotImplementedError, match="not implemented yet"):
            getattr(stub, name)(*[w[k] for k in keys])


# --------------------------------------------------------------------------- live charts
def test_every_live_chart_runs_on_defaults_and_other_models():
    import altair as alt
    import pandas as pd

    import mechinterp_edu.lessons.qk_ov_circuits.charts  # noqa: F401
    from mechinterp_edu.lesson_source import load_lesson
    from mechinterp_edu.live import registry

    names = [n for n in (c.name for c in registry.all_charts()) if n.startswith("qk_ov_circuits.")]
    assert set(load_lesson(2).refs("chart")) <= set(names)
    for name in names:
        for ctx in (None, {"model": "random-1h", "head": 2, "top_k": 3, "prompt": "1 2 3"}):
            out = registry.compute(name, ctx)
            items = out if isinstance(out, list) else [out]
            for item in items:
                if isinstance(item, alt.TopLevelMixin):
                    item.to_dict()
                else:
                    assert isinstance(item, (str, dict, pd.DataFrame)), (name, type(item))


def test_live_decomposition_agrees_with_the_model():
    import mechinterp_edu.lessons.qk_ov_circuits.charts  # noqa: F401
    from mechinterp_edu.live.registry import compute

    out = compute("qk_ov_circuits.prompt_decomposition", {"model": "random-4h", "head": 1, "prompt": "1 5 2 5 7"})
    metrics = [o for o in out if isinstance(o, dict)][0]
    assert all(v < 1e-10 for v in metrics.values()), metrics
    frames = [o for o in compute("qk_ov_circuits.top_pairs", {"model": "random-4h", "head": 0, "top_k": 4})
              if not isinstance(o, str)]
    assert [len(f) for f in frames] == [4, 4, 4]


# --------------------------------------------------------------------------- grading
def _grade_source():
    from mechinterp_edu.grader.grade import grade_source
    return grade_source


SUBMISSION = '''
import math
import torch

QK_MODE = {qk!r}
POS_MODE = {pos!r}
OV_MODE = {ov!r}
COPY_MODE = {copy!r}


def _bilinear(E, W_Q, W_K, mode):
    out = []
    for h in range(W_Q.shape[0]):
        if mode == "no_embedding":
            m = W_Q[h] @ W_K[h].T
        else:
            m = (E @ W_Q[h]) @ (E @ W_K[h]).T
        if mode == "transposed":
            m = m.T
        if mode == "scaled":
            m = m / math.sqrt(W_Q.shape[2])
        if mode == "masked":
            m = torch.tril(m)
        out.append(m)
    return torch.stack(out)


def full_qk_circuit(W_E, W_Q, W_K):
    return _bilinear(W_E, W_Q, W_K, QK_MODE)


def positional_qk(W_pos, W_Q, W_K):
    return _bilinear(W_pos, W_Q, W_K, POS_MODE)


def full_ov_circuit(W_E, W_V, W_O, W_U):
    out = []
    for h in range(W_V.shape[0]):
        if OV_MODE == "no_embedding":
            m = W_V[h] @ W_O[h] @ W_U
        elif OV_MODE == "no_unembedding":
            m = W_E @ W_V[h] @ W_O[h]
        elif OV_MODE == "paper_order":
            m = W_U.T @ W_O[h].T @ W_V[h].T @ W_E.T
        else:
            m = W_E @ W_V[h] @ W_O[h] @ W_U
        out.append(m)
    return torch.stack(out)


def copying_score(W_E, W_V, W_O, W_U):
    scores = []
    for h in range(W_V.shape[0]):
        if COPY_MODE == "residual":
            m = W_V[h] @ W_O[h]
        else:
            m = W_E @ W_V[h] @ W_O[h] @ W_U
        lam = torch.linalg.eigvals(m.double())
        if COPY_MODE == "abs_numerator":
            s = lam.abs().sum() / lam.abs().sum()
        elif COPY_MODE == "real_denominator":
            s = lam.sum().real / lam.real.abs().sum()
        elif COPY_MODE == "largest":
            top = lam[lam.abs().argmax()]
            s = top.real / top.abs()
        else:
            s = lam.sum().real / lam.abs().sum()
        scores.append(s)
    return torch.stack(scores).to(W_E.dtype)
'''

CORRECT = dict(qk="right", pos="right", ov="right", copy="right")
MISTAKE_SUBMISSIONS = [
    ("full_qk_circuit", "QK circuit transposed", dict(qk="transposed")),
    ("full_qk_circuit", "QK circuit scaled", dict(qk="scaled")),
    ("full_qk_circuit", "missing W_E", dict(qk="no_embedding")),
    ("positional_qk", "QK circuit transposed", dict(pos="transposed")),
    ("positional_qk", "QK circuit scaled", dict(pos="scaled")),
    ("positional_qk", "masked above the diagonal", dict(pos="masked")),
    ("full_ov_circuit", "OV factors in the wrong order", dict(ov="paper_order")),
    ("full_ov_circuit", "missing W_E", dict(ov="no_embedding")),
    ("full_ov_circuit", "missing W_U", dict(ov="no_unembedding")),
    ("copying_score", "absolute values in the numerator", dict(copy="abs_numerator")),
    ("copying_score", "real parts in the denominator", dict(copy="real_denominator")),
    ("copying_score", "eigenvalues of W_V W_O only", dict(copy="residual")),
    ("copying_score", "largest eigenvalue only", dict(copy="largest")),
]


def test_catalogue_covers_the_issue_and_every_mistake_differs_from_the_reference():
    from mechinterp_edu.grader.spec import exercises_for
    exercises = {ex.name: ex for ex in exercises_for(2)}
    assert "QK circuit transposed" in {m.name for m in exercises["full_qk_circuit"].mistakes}
    assert {"OV factors in the wrong order", "missing W_E"} <= {m.name for m in exercises["full_ov_circuit"].mistakes}
    for ex in exercises.values():
        cases = ex.cases()
        labels = " | ".join(c.label for c in cases)
        assert "float32" in labels and "float64" in labels and "one head" in labels
        for m in ex.mistakes:
            differs = False
            for case in cases:
                got, want = m.fn(*case.args), ex.reference(*case.args)
                if got.shape != want.shape or tp.relative_error(got, want) > 1e-3:
                    differs = True
                    break
            assert differs, f"{ex.name}: mistake {m.name!r} equals the reference on every case"


def _feedback(result) -> str:
    fb = result.feedback
    return fb if isinstance(fb, str) else "\n".join(map(str, fb))


def test_grader_gives_solutions_full_marks_and_stubs_zero():
    grade_source = _grade_source()
    report = grade_source(LESSON.solution_path.read_text(encoding="utf-8"), 2, sandbox=False)
    assert {r.exercise for r in report.results} == {"full_qk_circuit", "full_ov_circuit", "positional_qk",
                                                    "copying_score"}
    for r in report.results:
        assert r.passed and r.score == r.max_score, (r.exercise, _feedback(r))
    report = grade_source(LESSON.exercise_path.read_text(encoding="utf-8"), 2, sandbox=False)
    for r in report.results:
        assert not r.passed and r.score == 0, (r.exercise, _feedback(r))


def test_correct_template_submission_passes():
    grade_source = _grade_source()
    for r in grade_source(SUBMISSION.format(**CORRECT), 2, sandbox=False).results:
        assert r.passed, (r.exercise, _feedback(r))


@pytest.mark.parametrize("exercise,mistake,knobs", MISTAKE_SUBMISSIONS,
                         ids=[f"{e}:{m}" for e, m, _ in MISTAKE_SUBMISSIONS])
def test_grader_names_each_catalogued_mistake(exercise, mistake, knobs):
    grade_source = _grade_source()
    report = grade_source(SUBMISSION.format(**{**CORRECT, **knobs}), 2, exercises=[exercise], sandbox=False)
    (result,) = [r for r in report.results if r.exercise == exercise]
    feedback = _feedback(result)
    assert not result.passed
    assert mistake.lower() in feedback.lower(), f"expected the grader to name {mistake!r}; got:\n{feedback}"
