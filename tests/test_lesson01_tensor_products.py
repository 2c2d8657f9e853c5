"""Lesson 1 (tensor products): reference == worked solutions == the model's own forward pass,
Kronecker identities, sympy derivations, lesson source, live charts and grading.

Truths used: the model's forward pass through ``run_with_cache`` (logits, ``hook_pattern``,
and scores recomputed from ``hook_q``/``hook_k``), a second implementation (the worked
solutions: loops and explicit Kronecker products where the reference uses einsum), and sympy.
"""
from __future__ import annotations

import math

import pytest
from support import import_file
import torch

from mechinterp_edu.course import get_lesson
from mechinterp_edu.lessons.tensor_products import reference as ref

LESSON = get_lesson(1)
TOL = 1e-6                    # float64 relative error bound the lesson promises
KEYS = ("W_E", "W_pos", "W_Q", "W_K", "W_V", "W_O", "W_U")
# Random boot_native shapes (besides the lesson's TOY_SHAPES): several widths, one head, long context.
EXTRA_SHAPES = {
    "5h-dhead3": dict(d_vocab=17, d_model=15, n_heads=5, d_head=3, n_ctx=9),
    "4h-long": dict(d_vocab=10, d_model=24, n_heads=4, d_head=6, n_ctx=20),
}


pytestmark = pytest.mark.usefixtures("one_torch_thread")




@pytest.fixture(scope="module")
def sol():
    return import_file(LESSON.solution_path, "_lesson01_solutions")


@pytest.fixture(scope="module")
def stub():
    return import_file(LESSON.exercise_path, "_lesson01_exercises")


def _model_cases():
    cases = []
    for name in ref.TOY_SHAPES:
        cases.append((name, ref.TOY_SHAPES[name], 0))
    for name, shape in EXTRA_SHAPES.items():
        cases.append((name, shape, 7))
    cases.append(("random-4h seed 3", ref.TOY_SHAPES["random-4h"], 3))
    return cases


MODEL_CASES = _model_cases()


@pytest.fixture(scope="module")
def random_models():
    return {label: ref.random_toy_model(shape, seed=seed, dtype=torch.float64) for label, shape, seed in MODEL_CASES}


@pytest.fixture(scope="module")
def trained():
    try:
        from mechinterp_edu.models.zoo import load_model
        model = load_model("skip_trigrams", device="cpu", dtype=torch.float64)
    except Exception as exc:  # noqa: BLE001
        pytest.skip(f"trained skip_trigrams checkpoint not loadable here: {type(exc).__name__}: "
                    f"{str(exc).splitlines()[0] if str(exc) else ''}")
    return model


def _tokens(model, seed, batch=None, n=None):
    gen = torch.Generator().manual_seed(seed)
    n = n or model.cfg.n_ctx
    shape = (batch, n) if batch else (n,)
    return torch.randint(0, model.cfg.d_vocab, shape, generator=gen)


def _truth(model, tokens):
    """(logits, pattern, scaled masked scores from hook_q/hook_k) from the model itself."""
    logits, cache = model.run_with_cache(tokens[None])
    q, k = cache["blocks.0.attn.hook_q"][0], cache["blocks.0.attn.hook_k"][0]
    scores = torch.einsum("qhd,khd->hqk", q, k) / math.sqrt(q.shape[-1])
    n = scores.shape[-1]
    scores = scores.masked_fill(torch.triu(torch.ones(n, n, dtype=torch.bool), 1), float("-inf"))
    return logits[0], cache["blocks.0.attn.hook_pattern"][0], scores


def _check_model(model, sol, seed, n=None):
    w = ref.model_weights(model, dtype=torch.float64)
    assert all(bool((w[b] == 0).all()) for b in ("b_Q", "b_K", "b_V", "b_O", "b_U")), \
        "the lesson's model has no biases"
    args = [w[k] for k in KEYS]
    tokens = _tokens(model, seed, n=n)
    logits, pattern, scores = _truth(model, tokens)
    errors = {}
    # attention patterns: from hook_q/hook_k scores (an independent softmax) and from hook_pattern
    from_scores = torch.softmax(scores, dim=-1)
    for who, A in (("reference", ref.attention_patterns(tokens, *args[:4])),
                   ("solution", sol.attention_patterns(tokens, *args[:4]))):
        errors[f"{who} patterns vs hook_q/hook_k"] = ref.relative_error(A, from_scores)
        errors[f"{who} patterns vs hook_pattern"] = ref.relative_error(A, pattern)
    for who, got in (("reference", ref.tensor_product_logits(tokens, *args)),
                     ("solution", sol.tensor_product_logits(tokens, *args))):
        assert got.dtype == torch.float64 and got.shape == logits.shape
        errors[f"{who} logits vs forward"] = ref.relative_error(got, logits)
    # The corrected notes' T (token part) plus the positional part reproduces the forward pass too.
    A = sol.attention_patterns(tokens, *args[:4])
    X = torch.nn.functional.one_hot(tokens, w["W_E"].shape[0]).double()
    terms = ref.tensor_product_terms(tokens, *args)
    positional = terms.direct_positions + terms.head_positions.sum(0)
    for who, T in (("reference", ref.tensor_product_matrix(A, w["W_E"], w["W_V"], w["W_O"], w["W_U"])),
                   ("solution", sol.corrected_notes_T(A, w["W_E"], w["W_V"], w["W_O"], w["W_U"]))):
        token_part = (T @ X.reshape(-1)).reshape(len(tokens), -1)
        errors[f"{who} T vec(X) + positions vs forward"] = ref.relative_error(token_part + positional, logits)
    bad = {k: v for k, v in errors.items() if not v <= TOL}
    assert not bad, f"relative errors above {TOL}: {bad}"
    return errors


# --------------------------------------------------------------------------- numerics vs the model
@pytest.mark.parametrize("label", [c[0] for c in MODEL_CASES])
def test_reference_and_solution_equal_forward_pass_random(label, random_models, sol):
    model = random_models[label]
    _check_model(model, sol, 0)                                    # full context
    _check_model(model, sol, 5, n=1)                               # a single position
    _check_model(model, sol, 6, n=max(2, model.cfg.n_ctx // 2))    # shorter than n_ctx_max


def test_reference_and_solution_equal_forward_pass_trained(trained, sol):
    for seed in range(3):
        errors = _check_model(trained, sol, seed)
    assert max(errors.values()) <= TOL


def test_trained_model_is_the_lesson_architecture(trained):
    cfg = trained.cfg
    assert cfg.n_layers == 1 and cfg.attn_only and cfg.normalization_type is None
    assert cfg.n_heads >= 4


def test_reference_is_batched_and_keeps_dtype(random_models):
    model = random_models["random-4h"]
    w64 = ref.model_weights(model, dtype=torch.float64)
    tokens = _tokens(model, 3, batch=3)
    batched = ref.tensor_product_logits(tokens, *[w64[k] for k in KEYS])
    for b in range(3):
        single = ref.tensor_product_logits(tokens[b], *[w64[k] for k in KEYS])
        assert torch.equal(batched[b], single) or ref.relative_error(batched[b], single) < 1e-12
        assert ref.relative_error(batched[b], _truth(model, tokens[b])[0]) <= TOL
    w32 = ref.model_weights(model, dtype=torch.float32)
    out32 = ref.tensor_product_logits(tokens[0], *[w32[k] for k in KEYS])
    assert out32.dtype == torch.float32
    assert ref.relative_error(out32, batched[0]) < 1e-5


def test_positional_terms_are_needed(random_models, sol):
    """The paper's T alone (positions only inside A) is not the model: the gap is large."""
    model = random_models["random-4h"]
    w = ref.model_weights(model)
    tokens = _tokens(model, 2)
    terms = ref.tensor_product_terms(tokens, *[w[k] for k in KEYS])
    logits = _truth(model, tokens)[0]
    paper_only = terms.direct_tokens + terms.head_tokens.sum(0)
    assert ref.relative_error(paper_only, logits) > 1e-2
    assert ref.relative_error(terms.total(), logits) <= TOL


def test_random_biases_enter_as_the_lesson_says():
    """With random biases the bias-free formula fails and the bias-aware one matches the model."""
    model = ref.random_toy_model("random-4h", seed=4, biases=True, dtype=torch.float64)
    w = ref.model_weights(model)
    assert float(w["b_V"].abs().max()) > 0 and float(w["b_Q"].abs().max()) > 0
    tokens = _tokens(model, 8)
    logits = _truth(model, tokens)[0]
    assert ref.relative_error(ref.forward_logits(tokens, w), logits) <= TOL
    assert ref.relative_error(ref.tensor_product_logits(tokens, *[w[k] for k in KEYS]), logits) > 1e-3


def test_bad_inputs_get_clear_messages():
    w = ref.random_weights(5, 4, 2, 2, 3)
    with pytest.raises(ValueError, match="token ids must lie in"):
        ref.attention_patterns(torch.tensor([0, 7]), w["W_E"], w["W_pos"], w["W_Q"], w["W_K"])
    with pytest.raises(ValueError, match="n_ctx_max"):
        ref.attention_patterns(torch.tensor([0, 1, 2, 3]), w["W_E"], w["W_pos"], w["W_Q"], w["W_K"])
    with pytest.raises(ValueError, match="integer"):
        ref.attention_patterns(torch.tensor([0.0, 1.0]), w["W_E"], w["W_pos"], w["W_Q"], w["W_K"])
    with pytest.raises(ValueError, match="shapes do not fit"):
        ref.kron_apply(torch.ones(2, 3), torch.ones(2, 2), torch.ones(2, 2))
    with pytest.raises(ValueError, match="outside this model's vocabulary"):
        ref.parse_prompt("1 99", 10, 5)


# --------------------------------------------------------------------------- Kronecker products
@pytest.mark.parametrize("shapes,dtype", [((2, 3, 4, 5), torch.float64), ((3, 3, 2, 2), torch.float64),
                                          ((1, 1, 3, 4), torch.float64), ((4, 2, 3, 1), torch.float32)])
def test_kron_apply_equals_two_sided_product(shapes, dtype, sol):
    n_out, n_in, p, q = shapes
    gen = torch.Generator().manual_seed(sum(shapes))
    A = torch.randn(n_out, n_in, generator=gen, dtype=torch.float64).to(dtype)
    W = torch.randn(p, q, generator=gen, dtype=torch.float64).to(dtype)
    X = torch.randn(n_in, q, generator=gen, dtype=torch.float64).to(dtype)
    two_sided = A @ X @ W.T
    tol = 1e-12 if dtype == torch.float64 else 1e-5
    for fn in (ref.kron_apply, sol.kron_apply):
        got = fn(A, W, X)
        assert got.shape == (n_out, p)
        assert ref.relative_error(got, two_sided) <= tol
    # transposed views go through too (torch.kron needs contiguous inputs for some layouts)
    assert ref.relative_error(sol.kron_apply(A, W.T.contiguous().T, X), two_sided) <= tol
    # The notes' outer product, reshaped to the Kronecker shape, is wrong whenever A or W is not 1 x 1.
    if A.numel() > 1 and W.numel() > 1:
        assert ref.relative_error(ref.notes_outer_apply(A, W, X), two_sided) > 1e-3


def test_kron_is_an_interleaving_of_outer():
    """The lesson's two applications of A (x) W, checked against the outer product written out by
    hand: kron_apply uses the interleaved one, notes_outer_apply the plain reshape (the notes' slip)."""
    gen = torch.Generator().manual_seed(0)
    A = torch.randn(2, 3, dtype=torch.float64, generator=gen)
    W = torch.randn(4, 5, dtype=torch.float64, generator=gen)
    X = torch.randn(3, 5, dtype=torch.float64, generator=gen)
    outer = torch.outer(A.reshape(-1), W.reshape(-1))                 # rows (i, j), columns (a, b)
    interleaved = outer.reshape(2, 3, 4, 5).permute(0, 2, 1, 3).reshape(8, 15)
    assert torch.equal(interleaved, torch.kron(A, W))
    assert not torch.allclose(outer.reshape(8, 15), torch.kron(A, W))
    by_hand = (interleaved @ X.reshape(-1)).reshape(2, 4)
    assert torch.allclose(ref.kron_apply(A, W, X), by_hand, rtol=1e-12, atol=1e-12)
    assert torch.allclose(ref.notes_outer_apply(A, W, X), (outer.reshape(8, 15) @ X.reshape(-1)).reshape(2, 4),
                          rtol=1e-12, atol=1e-12)
    assert not torch.allclose(ref.notes_outer_apply(A, W, X), by_hand)


def test_tensor_product_matrix_reference_vs_solution(random_models, sol):
    model = random_models["random-8h"]
    w = ref.model_weights(model)
    tokens = _tokens(model, 11, n=7)
    A = ref.attention_patterns(tokens, w["W_E"], w["W_pos"], w["W_Q"], w["W_K"])
    T_ref = ref.tensor_product_matrix(A, w["W_E"], w["W_V"], w["W_O"], w["W_U"])
    T_sol = sol.corrected_notes_T(A, w["W_E"], w["W_V"], w["W_O"], w["W_U"])
    assert T_ref.shape == (7 * w["W_E"].shape[0],) * 2
    assert ref.relative_error(T_sol, T_ref) <= 1e-12


# --------------------------------------------------------------------------- derivations
def _lesson_derivations():
    import mechinterp_edu.lessons.tensor_products.derivations  # noqa: F401  (registers lesson 1's derivations)
    from mechinterp_edu.derivations import framework
    return [d for d in framework.all_derivations() if d.lesson == 1]


def test_every_derivation_step_proves():
    from mechinterp_edu.lessons.tensor_products.charts import DERIVATIONS, _verdicts
    derivations = _lesson_derivations()
    assert {d.name for d in derivations} == set(DERIVATIONS)
    verdicts = _verdicts()          # framework.check over every step (cached: the live chart shows them)
    assert len(verdicts) == sum(len(d.steps) for d in derivations)
    failed = [(r.derivation, r.step, r.detail) for r in verdicts if not r.passed]
    assert not failed, failed


def _false_steps():
    import sympy as sp

    from mechinterp_edu.lessons.tensor_products import derivations as D
    from mechinterp_edu.derivations.framework import Step, symbolic_matrix

    A, X, W = symbolic_matrix("A", 2, 3), symbolic_matrix("x", 3, 2), symbolic_matrix("W", 2, 2)
    A2, W2 = symbolic_matrix("A", 2, 2), symbolic_matrix("W", 2, 3)
    E, U = symbolic_matrix("E", 3, 2), symbolic_matrix("U", 2, 3)
    s = sp.symbols("s0:3", real=True)
    c = sp.Symbol("c", real=True)
    return [
        Step("kron order with row-major vec", "", lambda: D.vec_rows(A * X * W.T),
             lambda: D.kron(W, A) * D.vec_rows(X), "matrix"),
        Step("missing transpose on W", "", lambda: D.vec_rows(A * X * W), lambda: D.kron(A, W) * D.vec_rows(X),
             "matrix"),
        Step("np.outer reshaped is the Kronecker product", "", lambda: D.kron(A2, W2),
             lambda: (D.vec_rows(A2) * D.vec_rows(W2).T).reshape(4, 6), "matrix"),
        Step("paper direct path without transpose", "", lambda: U.T * E.T, lambda: E * U, "matrix"),
        Step("softmax invariant to a non-uniform shift", "",
             lambda: D.softmax([s[0] + c, s[1], s[2]]), lambda: D.softmax(list(s)), "simplify"),
        Step("mask after softmax still sums to one", "",
             lambda: sum(list(D.softmax(list(s)))[:2]), lambda: 1, "simplify"),
        Step("variance with 1/d_head scaling is 1", "", lambda: D._scale_variance(4)[0] / 16, lambda: 1, "simplify"),
        Step("bias passes through a non-stochastic A", "",
             lambda: symbolic_matrix("A", 2, 2) * (sp.ones(2, 1) * symbolic_matrix("b", 1, 2)),
             lambda: sp.ones(2, 1) * symbolic_matrix("b", 1, 2), "matrix"),
    ]


@pytest.mark.parametrize("index", range(8))
def test_deliberately_false_steps_fail(index):
    from mechinterp_edu.derivations.framework import Derivation, check_step
    step = _false_steps()[index]
    result = check_step(Derivation("test.false", "false", (step,)), step)
    assert not result.passed, f"{step.name} should not prove, got: {result.detail}"


# --------------------------------------------------------------------------- lesson source
def test_lesson_source_is_this_lesson_with_its_exercises():
    """What is particular to lesson 1; reference resolution, shown steps and controls are checked
    for every lesson in test_platform_lessons.py."""
    from mechinterp_edu.grader.spec import exercises_for
    from mechinterp_edu.lesson_source import load_lesson

    lesson = load_lesson(1)
    assert lesson.title == LESSON.title
    assert set(lesson.refs("exercise")) == {ex.name for ex in exercises_for(1)} == {
        "attention_patterns", "kron_apply", "tensor_product_logits", "corrected_notes_T"}


def test_lesson_code_cells_run_in_order(capsys):
    from mechinterp_edu.lesson_source import load_lesson
    namespace: dict = {}
    for i, code in enumerate(load_lesson(1).refs("code")):
        exec(compile(code, f"lesson01 cell {i}", "exec"), namespace)  # noqa: S102
    out = capsys.readouterr().out
    assert "True" in out and "False" not in out


def test_stubs_raise_not_implemented(stub):
    w = ref.random_weights(5, 4, 2, 2, 3)
    tokens = torch.tensor([0, 1])
    calls = {
        "attention_patterns": (tokens, w["W_E"], w["W_pos"], w["W_Q"], w["W_K"]),
        "kron_apply": (torch.eye(2), torch.eye(2), torch.eye(2)),
        "tensor_product_logits": (tokens, *[w[k] for k in KEYS]),
        "corrected_notes_T": (torch.ones(2, 2, 2), w["W_E"], w["W_V"], w["W_O"], w["W_U"]),
    }
    for name, args in calls.items():
        with pytest.raises(NotImplementedError, match="not implemented yet"):
            getattr(stub, name)(*args)


# --------------------------------------------------------------------------- live charts
def _check_output(out):
    import altair as alt
    import pandas as pd

    from mechinterp_edu.derivations.framework import StepResult
    items = out if isinstance(out, list) else [out]
    assert items
    for item in items:
        if isinstance(item, alt.TopLevelMixin):
            item.to_dict()
        else:
            assert isinstance(item, (str, dict, pd.DataFrame, StepResult)), type(item)


def test_every_live_chart_runs_on_defaults_and_other_models():
    import mechinterp_edu.lessons.tensor_products.charts  # noqa: F401  (registers lesson 1's charts)
    from mechinterp_edu.lesson_source import load_lesson
    from mechinterp_edu.live import registry
    from mechinterp_edu.live.registry import compute

    names = [name for name in (c.name for c in registry.all_charts()) if name.startswith("tensor_products.")]
    assert set(load_lesson(1).refs("chart")) <= set(names)
    for name in names:
        out = compute(name)
        _check_output(out)
        if name != "tensor_products.derivation":
            _check_output(compute(name, {"model": "random-1h", "head": 3, "prompt": "1 2 3 4 5 6 7 8"}))
    verdicts = compute("tensor_products.derivation")
    assert verdicts and all(v.passed for v in verdicts)


def test_live_comparison_reports_agreement_and_bad_prompts():
    import mechinterp_edu.lessons.tensor_products.charts  # noqa: F401
    from mechinterp_edu.live.registry import compute

    out = compute("tensor_products.sum_vs_model", {"model": "random-8h", "head": 2, "prompt": "3 1 4 1 5 9"})
    metrics = [o for o in out if isinstance(o, dict)][0]
    assert metrics["relative error"] <= TOL
    assert metrics["relative error without the positional terms"] > 1e-2
    bad = compute("tensor_products.attention_pattern", {"model": "random-4h", "prompt": "1 banana"})
    assert isinstance(bad, str) and "banana" in bad


# --------------------------------------------------------------------------- grading
def _grade_module():
    from mechinterp_edu.course import ROOT
    path = ROOT / "mechinterp_edu" / "grader" / "grade.py"
    if not path.exists():
        pytest.skip("mechinterp_edu/grader/grade.py is not written yet (another engineer's file)")
    from mechinterp_edu.grader.grade import grade_source
    return grade_source


SUBMISSION = '''
import math
import torch

SCALE = {scale!r}
MASK = {mask!r}
AXIS = {axis!r}
POS_IN_ATTENTION = {pos_attn!r}
SWAP_QK = {swap!r}
DIRECT = {direct!r}
POS_TERMS = {pos_terms!r}
APPLY = {apply!r}
TRANSPOSE = {transpose!r}
KRON_MODE = {kron_mode!r}
NOTES_MODE = {notes_mode!r}


def attention_patterns(tokens, W_E, W_pos, W_Q, W_K):
    n = tokens.shape[0]
    resid = W_E[tokens]
    if POS_IN_ATTENTION:
        resid = resid + W_pos[:n]
    heads = []
    for h in range(W_Q.shape[0]):
        wq, wk = (W_K[h], W_Q[h]) if SWAP_QK else (W_Q[h], W_K[h])
        s = (resid @ wq) @ (resid @ wk).T
        d = W_Q.shape[2]
        if SCALE == "sqrt":
            s = s / math.sqrt(d)
        elif SCALE == "d_head":
            s = s / d
        if MASK is True:
            s = s.masked_fill(torch.ones(n, n, dtype=torch.bool).triu(1), float("-inf"))
        p = torch.softmax(s, dim=1 if AXIS == "key" else 0)
        if MASK == "after":
            p = p * torch.ones(n, n, dtype=p.dtype).tril()
        heads.append(p)
    return torch.stack(heads)


def _outer_apply(A, W, X):
    big = torch.outer(A.flatten(), W.flatten()).reshape(A.shape[0] * W.shape[0], A.shape[1] * W.shape[1])
    return (big @ X.flatten()).reshape(A.shape[0], W.shape[0])


def _apply(A, W, X):
    if APPLY == "outer":
        return _outer_apply(A, W, X)
    return A @ X @ W.T


def tensor_product_logits(tokens, W_E, W_pos, W_Q, W_K, W_V, W_O, W_U):
    n = tokens.shape[0]
    A = attention_patterns(tokens, W_E, W_pos, W_Q, W_K)
    X = torch.zeros(n, W_E.shape[0], dtype=W_E.dtype)
    X[torch.arange(n), tokens] = 1
    P = W_pos[:n]
    I = torch.eye(n, dtype=W_E.dtype)
    if APPLY == "outer_all":
        Xa = torch.cat([X, I], 1)
        Ea = torch.cat([W_E, P], 0)
        out = _outer_apply(I, (Ea @ W_U).T, Xa)
        for h in range(W_Q.shape[0]):
            out = out + _outer_apply(A[h], (Ea @ W_V[h] @ W_O[h] @ W_U).T, Xa)
        return out
    fix = (lambda M: M.T) if TRANSPOSE else (lambda M: M)
    out = torch.zeros(n, W_U.shape[1], dtype=W_E.dtype)
    if DIRECT:
        out = out + _apply(I, fix(W_E @ W_U), X)
        if POS_TERMS:
            out = out + P @ W_U
    for h in range(W_Q.shape[0]):
        out = out + _apply(A[h], fix(W_E @ W_V[h] @ W_O[h] @ W_U), X)
        if POS_TERMS:
            out = out + A[h] @ P @ W_V[h] @ W_O[h] @ W_U
    return out


def kron_apply(A, W, X):
    if KRON_MODE == "outer":
        return _outer_apply(A, W, X)
    if KRON_MODE == "swapped":
        return (torch.kron(W.contiguous(), A.contiguous()) @ X.flatten()).reshape(A.shape[0], W.shape[0])
    if KRON_MODE == "colmajor":
        y = torch.kron(A.contiguous(), W.contiguous()) @ X.T.flatten()
        return y.reshape(W.shape[0], A.shape[0]).T
    if KRON_MODE == "no_transpose":
        return A @ X @ W
    return (torch.kron(A.contiguous(), W.contiguous()) @ X.flatten()).reshape(A.shape[0], W.shape[0])


def corrected_notes_T(patterns, W_E, W_V, W_O, W_U):
    n = patterns.shape[1]
    v = W_E.shape[0]
    if NOTES_MODE == "outer":
        comb = lambda a, b: torch.outer(a.flatten(), b.flatten()).reshape(a.shape[0] * b.shape[0], a.shape[1] * b.shape[1])
    elif NOTES_MODE == "swapped":
        comb = lambda a, b: torch.kron(b.contiguous(), a.contiguous())
    else:
        comb = lambda a, b: torch.kron(a.contiguous(), b.contiguous())
    fix = (lambda M: M) if NOTES_MODE == "no_transpose" else (lambda M: M.T)
    T = torch.zeros(n * v, n * v, dtype=W_E.dtype)
    if NOTES_MODE != "no_direct":
        T = T + comb(torch.eye(n, dtype=W_E.dtype), fix(W_E @ W_U))
    for h in range(patterns.shape[0]):
        T = T + comb(patterns[h], fix(W_E @ W_V[h] @ W_O[h] @ W_U))
    return T
'''

CORRECT = dict(scale="sqrt", mask=True, axis="key", pos_attn=True, swap=False, direct=True, pos_terms=True,
               apply="two_sided", transpose=True, kron_mode="kron", notes_mode="kron")

# (exercise, catalogued mistake name, knobs that make the submission commit it)
MISTAKE_SUBMISSIONS = [
    ("attention_patterns", "missing 1/sqrt(d_head)", dict(scale="none")),
    ("attention_patterns", "1/d_head instead of 1/sqrt(d_head)", dict(scale="d_head")),
    ("attention_patterns", "no causal mask", dict(mask=False)),
    ("attention_patterns", "mask applied after the softmax", dict(mask="after")),
    ("attention_patterns", "softmax over the wrong axis", dict(axis="query")),
    ("attention_patterns", "missing positional embeddings", dict(pos_attn=False)),
    ("attention_patterns", "queries and keys swapped", dict(swap=True)),
    ("tensor_product_logits", "missing direct path", dict(direct=False)),
    ("tensor_product_logits", "missing positional embeddings", dict(pos_attn=False, pos_terms=False)),
    ("tensor_product_logits", "positions only inside the attention", dict(pos_terms=False)),
    ("tensor_product_logits", "the notes' outer product", dict(apply="outer")),
    ("tensor_product_logits", "the notes' outer product (positions too)", dict(apply="outer_all")),
    ("tensor_product_logits", "paper matrices not transposed", dict(transpose=False)),
    ("tensor_product_logits", "missing 1/sqrt(d_head)", dict(scale="none")),
    ("tensor_product_logits", "1/d_head instead of 1/sqrt(d_head)", dict(scale="d_head")),
    ("tensor_product_logits", "no causal mask", dict(mask=False)),
    ("tensor_product_logits", "softmax over the wrong axis", dict(axis="query")),
    ("tensor_product_logits", "mask applied after the softmax", dict(mask="after")),
    ("kron_apply", "the notes' outer product", dict(kron_mode="outer")),
    ("kron_apply", "Kronecker factors swapped", dict(kron_mode="swapped")),
    ("kron_apply", "column-major vec with A ⊗ W", dict(kron_mode="colmajor")),
    ("corrected_notes_T", "the notes' outer product", dict(notes_mode="outer")),
    ("corrected_notes_T", "paper matrices not transposed", dict(notes_mode="no_transpose")),
    ("corrected_notes_T", "Kronecker factors swapped", dict(notes_mode="swapped")),
    ("corrected_notes_T", "missing direct path", dict(notes_mode="no_direct")),
]


def test_catalogue_covers_the_issue_and_every_mistake_differs_from_the_reference():
    from mechinterp_edu.grader.spec import exercises_for
    exercises = {ex.name: ex for ex in exercises_for(1)}
    names = {m.name for m in exercises["tensor_product_logits"].mistakes} | \
        {m.name for m in exercises["attention_patterns"].mistakes}
    for required in ("missing 1/sqrt(d_head)", "1/d_head instead of 1/sqrt(d_head)", "no causal mask",
                     "softmax over the wrong axis", "missing direct path", "missing positional embeddings",
                     "the notes' outer product"):
        assert required in names
    for ex in exercises.values():
        cases = ex.cases()
        labels = " | ".join(c.label for c in cases)
        assert "float32" in labels and "float64" in labels
        for m in ex.mistakes:
            differs = False
            for case in cases:
                try:
                    got = m.fn(*case.args)
                except Exception:  # noqa: BLE001 - a shape-invalid variant differs by definition
                    differs = True
                    break
                want = ex.reference(*case.args)
                if got.shape != want.shape or ref.relative_error(got, want) > 1e-3:
                    differs = True
                    break
            assert differs, f"{ex.name}: mistake {m.name!r} equals the reference on every case"
    pattern_cases = exercises["attention_patterns"].cases()
    assert any(c.info["n_heads"] == 1 for c in pattern_cases)
    assert any(c.info["n_ctx"] == 1 for c in pattern_cases)


def _feedback(result) -> str:
    fb = result.feedback
    return fb if isinstance(fb, str) else "\n".join(map(str, fb))


def test_grader_gives_solutions_full_marks_and_stubs_zero():
    grade_source = _grade_module()
    report = grade_source(LESSON.solution_path.read_text(encoding="utf-8"), 1, sandbox=False)
    assert {r.exercise for r in report.results} == {
        "attention_patterns", "kron_apply", "tensor_product_logits", "corrected_notes_T"}
    for r in report.results:
        assert r.passed and r.score == r.max_score, (r.exercise, _feedback(r))
    report = grade_source(LESSON.exercise_path.read_text(encoding="utf-8"), 1, sandbox=False)
    for r in report.results:
        assert not r.passed and r.score == 0, (r.exercise, _feedback(r))


def test_correct_template_submission_passes():
    grade_source = _grade_module()
    report = grade_source(SUBMISSION.format(**CORRECT), 1, sandbox=False)
    for r in report.results:
        assert r.passed, (r.exercise, _feedback(r))


@pytest.mark.parametrize("exercise,mistake,knobs", MISTAKE_SUBMISSIONS,
                         ids=[f"{e}:{m}" for e, m, _ in MISTAKE_SUBMISSIONS])
def test_grader_names_each_catalogued_mistake(exercise, mistake, knobs):
    grade_source = _grade_module()
    source = SUBMISSION.format(**{**CORRECT, **knobs})
    report = grade_source(source, 1, exercises=[exercise], sandbox=False)
    (result,) = [r for r in report.results if r.exercise == exercise]
    feedback = _feedback(result)
    assert not result.passed
    assert mistake.lower() in feedback.lower(), f"expected the grader to name {mistake!r}; got:\n{feedback}"
    if "(positions too)" not in mistake:
        assert "(positions too)" not in feedback
