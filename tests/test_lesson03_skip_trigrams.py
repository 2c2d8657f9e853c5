"""Lesson 3: skip-trigrams, planted and recovered.

Reference vs worked solution, both against independent truths (the literal definition, the
notes' own printed output, a brute-force context for the score, the model's forward pass),
recovery on the shipped model, the sympy derivations (and false variants failing), the
lesson source, the live charts and the grader.
"""
from __future__ import annotations

import contextlib
import inspect
import io
import itertools
import math

import pytest
from support import import_file
import sympy as sp
import torch

from mechinterp_edu.course import get_lesson
from mechinterp_edu.lessons.skip_trigrams import model as st
from mechinterp_edu.lessons.skip_trigrams import reference as ref

LESSON = get_lesson(3)
KEYS = ("W_E", "W_pos", "W_Q", "W_K", "W_V", "W_O", "W_U")




SOL = import_file(LESSON.solution_path, "solutions_03")
STUBS = import_file(LESSON.exercise_path, "exercises_03")


@pytest.fixture(scope="module")
def trained():
    from mechinterp_edu.models.zoo import load_model
    from mechinterp_edu.weights import layer_weights
    with contextlib.redirect_stdout(io.StringIO()):
        model = load_model("skip_trigrams", device="cpu", dtype=torch.float64)
    w = layer_weights(model, 0, dtype=torch.float64, device="cpu")
    return model, [w[k] for k in KEYS]


def _random(v, m, h, d, n, seed, dtype=torch.float64):
    g = torch.Generator().manual_seed(seed)
    shapes = [(v, m), (n, m), (h, m, d), (h, m, d), (h, m, d), (h, d, m), (m, v)]
    return [torch.randn(*s, generator=g, dtype=torch.float64).to(dtype) for s in shapes]


SHAPES = [(7, 8, 4, 2, 6, 0), (5, 6, 1, 3, 4, 1), (9, 4, 2, 6, 2, 2), (4, 5, 3, 2, 1, 3)]


# --------------------------------------------------------------------------- enumerators
def _by_definition(t):
    """The literal definition over all position triples: a < b and c = b + 1."""
    n = len(t)
    return {(t[a], t[b], t[c]) for a, b, c in itertools.product(range(n), repeat=3) if a < b and c == b + 1}


def test_enumerators_match_the_definition_on_random_lists():
    g = torch.Generator().manual_seed(0)
    for trial in range(150):
        n = trial % 15
        vocab = 2 + trial % 6                   # small vocabularies: many repeats
        t = torch.randint(vocab, (n,), generator=g).tolist()
        truth = _by_definition(t)
        assert ref.skip_trigrams_in(t) == truth, t
        assert SOL.skip_trigrams_in(t) == truth, t
    assert ref.skip_trigrams_in(torch.tensor([3, 1, 4, 1])) == {(3, 1, 4), (3, 4, 1), (1, 4, 1)}


@pytest.mark.parametrize("n", [0, 1, 2, 3, 4, 9, 14])
def test_distinct_tokens_give_n_minus_1_choose_2(n):
    tokens = list(range(100, 100 + n))
    expected = (n - 1) * (n - 2) // 2 if n >= 3 else 0
    assert len(ref.skip_trigrams_in(tokens)) == len(SOL.skip_trigrams_in(tokens)) == expected


def test_fixed_notes_reproduce_the_notes_output_on_range_8():
    # The notes printed these lines for seq = range(8), step 1: there positions and tokens coincide.
    printed = [(0, 2, 3), (1, 3, 4), (2, 4, 5), (3, 5, 6), (4, 6, 7)]
    assert ref.skip_trigrams_at_step(list(range(8)), 1) == printed
    assert SOL.skip_trigrams_at_step(list(range(8)), 1) == printed


def test_fixed_notes_on_tokens_and_union_over_steps():
    words = st.encode("<s> keep the in mind")
    triples = lambda text: [tuple(st.encode(t)) for t in text.split(",")]      # noqa: E731
    assert SOL.skip_trigrams_at_step(words, 0) == triples("<s> keep the, keep the in, the in mind")
    assert SOL.skip_trigrams_at_step(words, 1) == triples("<s> the in, keep in mind")
    assert SOL.skip_trigrams_at_step(words, 2) == triples("<s> in mind")
    assert SOL.skip_trigrams_at_step(words, 3) == [] == ref.skip_trigrams_at_step(words, 3)
    g = torch.Generator().manual_seed(1)
    for trial in range(60):
        t = torch.randint(4, (trial % 13,), generator=g).tolist()
        for step in range(4):
            assert SOL.skip_trigrams_at_step(t, step) == ref.skip_trigrams_at_step(t, step)
        union = set().union(*[set(ref.skip_trigrams_at_step(t, s)) for s in range(max(len(t), 1))])
        assert union == _by_definition(t)


# --------------------------------------------------------------------------- scores
@pytest.mark.parametrize("shape", SHAPES)
def test_scores_reference_and_solution_agree(shape):
    args = _random(*shape)
    for h in range(shape[2]):
        r = ref.skip_trigram_scores(*args, h)
        assert r.shape == (shape[0],) * 3
        torch.testing.assert_close(SOL.skip_trigram_scores(*args, h), r, rtol=1e-9, atol=1e-9)
    torch.testing.assert_close(ref.skip_trigram_scores_all(*args).sum(0), ref.total_skip_trigram_scores(*args))


def test_score_is_the_logit_change_in_an_average_context():
    """Brute force: n keys holding the average token, one replaced by A, real softmax attention."""
    W_E, W_pos, W_Q, W_K, W_V, W_O, W_U = args = _random(6, 5, 2, 3, 5, 7)
    n, d_head = W_pos.shape[0], W_Q.shape[-1]
    x = W_E + W_pos.mean(0)
    x_bar = x.mean(0)
    for h in range(2):
        S = SOL.skip_trigram_scores(*args, h)
        for A, B in [(0, 1), (3, 3), (5, 2)]:
            keys = torch.stack([x[A]] + [x_bar] * (n - 1))
            attn = torch.softmax((x[B] @ W_Q[h]) @ (keys @ W_K[h]).T / math.sqrt(d_head), dim=0)
            with_a = attn @ (keys @ W_V[h] @ W_O[h] @ W_U)
            background = x_bar @ W_V[h] @ W_O[h] @ W_U
            change = with_a - background
            torch.testing.assert_close(S[A, B], change - change.mean(), rtol=1e-9, atol=1e-10)


def test_mean_position_equals_average_over_independent_positions():
    W_E, W_pos, W_Q, W_K, *_ = _random(4, 5, 1, 3, 6, 11)
    B, A = 1, 2
    avg = torch.stack([((W_E[B] + W_pos[i]) @ W_Q[0]) @ ((W_E[A] + W_pos[j]) @ W_K[0])
                       for i in range(6) for j in range(6)]).mean()
    p_bar = W_pos.mean(0)
    assert torch.isclose(avg, ((W_E[B] + p_bar) @ W_Q[0]) @ ((W_E[A] + p_bar) @ W_K[0]))


@pytest.mark.parametrize("shape", SHAPES)
def test_top_reference_and_solution_agree(shape):
    args = _random(*shape)
    total = ref.total_skip_trigram_scores(*args)
    for k in (1, 5, 20):
        r, s = ref.top_skip_trigrams(*args, k), SOL.top_skip_trigrams(*args, k)
        assert len(r) == len(s) == k and len(set(r)) == k
        torch.testing.assert_close(torch.stack([total[t] for t in s]), torch.stack([total[t] for t in r]))
        scores = [float(total[t]) for t in r]
        assert scores == sorted(scores, reverse=True)
        assert scores[-1] >= float(total.reshape(-1).sort(descending=True).values[k - 1]) - 1e-12


def test_recovery_on_the_shipped_model(trained):
    _, args = trained
    k = len(st.PLANTED)
    for fn in (ref.top_skip_trigrams, SOL.top_skip_trigrams):
        found = fn(*args, k)
        rate = ref.recovery_rate(found, st.PLANTED)
        assert rate >= 0.9, rate                   # 23 of 24 (95.8%) for the shipped checkpoint
    untrained = _random(48, 64, 4, 16, 14, 5, dtype=torch.float64)
    assert ref.recovery_rate(ref.top_skip_trigrams(*untrained, k), st.PLANTED) < 0.1


def test_weights_and_forward_pass_name_the_same_bug_head(trained):
    model, args = trained
    keep, in_, bay = (st.TOKEN_ID[w] for w in ("keep", "in", "bay"))
    S = ref.skip_trigram_scores_all(*args)                               # [h, A, B, C]
    from_weights = int(S[:, keep, in_, bay].argmax())
    from_forward = int(st.head_lifts(model, "keep", "in")[:, bay].argmax())
    assert from_weights == from_forward
    # each head's (B, C) table for A = keep has rank one (the factorised form)
    for h in range(S.shape[0]):
        sv = torch.linalg.svdvals(S[h, keep])
        assert float(sv[1]) <= 1e-9 * float(sv[0]) + 1e-12
    # summed over heads it does not: that is how head 0 repairs the bug
    sv = torch.linalg.svdvals(S.sum(0)[keep])
    assert float(sv[1]) > 1e-3 * float(sv[0])


# --------------------------------------------------------------------------- derivations
def test_derivation_steps_prove():
    from mechinterp_edu.derivations.framework import check, get_derivation
    from mechinterp_edu.lessons.skip_trigrams import derivations as skip_trigrams  # noqa: F401
    for name in ("skip_trigrams.factorisation", "skip_trigrams.bug"):
        results = check(get_derivation(name))
        assert results and all(r.passed for r in results), [(r.step, r.detail) for r in results if not r.passed]


def test_false_variants_fail():
    from mechinterp_edu.derivations.framework import Step, prove, symbolic_matrix
    from mechinterp_edu.lessons.skip_trigrams import derivations as der

    # 1. averaging only over causal pairs j < i is NOT the mean-position score
    def causal_average():
        e_b, e_a = symbolic_matrix("b", 1, 2), symbolic_matrix("a", 1, 2)
        P = symbolic_matrix("P", 3, 2)
        W = symbolic_matrix("W", 2, 2)
        pairs = [(i, j) for i in range(3) for j in range(i)]
        return sum(((e_b + P.row(i)) * W * (e_a + P.row(j)).T for i, j in pairs), sp.zeros(1, 1)) / len(pairs)

    def mean_position():
        e_b, e_a = symbolic_matrix("b", 1, 2), symbolic_matrix("a", 1, 2)
        P = symbolic_matrix("P", 3, 2)
        W = symbolic_matrix("W", 2, 2)
        p_bar = sp.ones(1, 3) * P / 3
        return (e_b + p_bar) * W * (e_a + p_bar).T

    assert not prove(Step("causal", "", causal_average, mean_position, "matrix"))[0]
    # 2. summed over two heads the minor does not vanish
    u = der._two_heads()[0]
    assert not prove(Step("two heads minor", "", lambda: u, lambda: 0, "simplify"))[0]
    # 3. centring the OV term over C only is not the change a source token makes
    def c_only():
        X = symbolic_matrix("x", 3, 2)
        OV = X * symbolic_matrix("V", 2, 2) * symbolic_matrix("O", 2, 2) * symbolic_matrix("U", 2, 3)
        return sp.Symbol("alpha", real=True) * (OV.row(2) - sp.ones(1, 3) * (sum(OV.row(2)) / 3))

    assert prove(Step("lift", "", lambda: der._lift()[0], lambda: der._lift()[1], "matrix"))[0]
    assert not prove(Step("c only", "", lambda: der._lift()[0], c_only, "matrix"))[0]


# --------------------------------------------------------------------------- lesson, charts
def test_lesson_references_resolve():
    from mechinterp_edu.derivations.framework import get_derivation
    from mechinterp_edu.grader.spec import exercises_for
    from mechinterp_edu.lesson_source import load_lesson
    from mechinterp_edu.live.registry import get_chart
    import mechinterp_edu.lessons.skip_trigrams.derivations  # noqa: F401
    import mechinterp_edu.lessons.skip_trigrams.charts  # noqa: F401

    lesson = load_lesson(3)
    assert lesson.title == LESSON.title
    for ref_name in lesson.refs("derivation"):
        name, _, step = ref_name.partition(":")
        d = get_derivation(name)
        if step:
            d.step(step)
    for chart in lesson.refs("chart"):
        get_chart(chart)
    registered = [e.name for e in exercises_for(3)]
    assert sorted(lesson.refs("exercise")) == sorted(registered)
    for name in registered:
        stub, sol = getattr(STUBS, name), getattr(SOL, name)
        assert list(inspect.signature(stub).parameters) == list(inspect.signature(sol).parameters)
        with pytest.raises(NotImplementedError, match="not implemented yet"):
            stub(*([None] * len(inspect.signature(stub).parameters)))
    controls = {c["name"] for c in lesson.controls}
    assert {"model", "head", "sequence", "k"} <= controls
    for code in lesson.refs("code"):
        compile(code, "lesson 3 code cell", "exec")


def test_live_charts_run():
    import mechinterp_edu.lessons.skip_trigrams.charts as live  # noqa: F401
    from mechinterp_edu.lesson_source import load_lesson
    from mechinterp_edu.live.registry import compute

    for chart in load_lesson(3).refs("chart"):
        out = compute(chart, {})
        assert isinstance(out, list) and out and not (isinstance(out[0], str) and "Cannot" in out[0]), chart
    bad = compute("skip_trigrams.sequence", {"sequence": "keep banana in"})
    assert "Cannot draw" in bad and "banana" in bad
    long = compute("skip_trigrams.sequence", {"sequence": " ".join(["the"] * 20), "head": 7})
    assert any(isinstance(o, str) and "at most 14" in o for o in long)
    assert any(isinstance(o, str) and "heads 0 to 3" in o for o in long)
    metrics = compute("skip_trigrams.planted_vs_found", {"k": 24})[0]
    assert metrics["recovered"] == "95.8%"
    bug = compute("skip_trigrams.bug", {"head": 1})
    probs = next(o for o in bug if isinstance(o, dict))
    assert float(probs["without head 0"].rstrip("%")) > 50 > float(probs["all heads"].rstrip("%"))


# --------------------------------------------------------------------------- grader
def _grade(source, exercises=None):
    from mechinterp_edu.grader.grade import grade_source
    return {r.exercise: r for r in grade_source(source, 3, exercises=exercises, sandbox=False).results}


def test_grader_solutions_full_marks_and_stubs_zero():
    full = _grade(LESSON.solution_path.read_text())
    assert set(full) == {"skip_trigrams_in", "skip_trigrams_at_step", "skip_trigram_scores", "top_skip_trigrams"}
    assert all(r.passed and r.score == r.max_score for r in full.values()), {k: r.feedback for k, r in full.items()}
    stubs = _grade(LESSON.exercise_path.read_text())
    assert all(not r.passed and r.score == 0 and "not implemented" in r.feedback for r in stubs.values())


# Each catalogued mistake, written as a learner would: one edit of the worked solution.
MISTAKE_EDITS = [
    ("skip_trigrams_in", "positions instead of tokens",
     "found.add((A, B, C))", "found.add((j, i, i + 1))"),
    ("skip_trigrams_in", "sources j <= i", "for j in range(i):", "for j in range(i + 1):"),
    ("skip_trigrams_in", "C taken as t[i]", "    C = tokens[i + 1]", "    C = tokens[i]"),
    ("skip_trigrams_in", "off-by-one at the end",
     "for i in range(1, len(tokens) - 1):", "for i in range(1, len(tokens) - 2):"),
    ("skip_trigrams_at_step", "positions instead of tokens",
     "out.append((tokens[j], tokens[i], tokens[i + 1]))", "out.append((j, i, i + 1))"),
    ("skip_trigrams_at_step", "off-by-one at the end",
     "if i + 1 > len(tokens) - 1:", "if i + 1 > len(tokens) - 2:"),
    ("skip_trigrams_at_step", "C taken as t[i]",
     "out.append((tokens[j], tokens[i], tokens[i + 1]))", "out.append((tokens[j], tokens[i], tokens[i]))"),
    ("skip_trigrams_at_step", "step read as the distance from A to B",
     "i = j + 1 + step", "i = j + step"),
    ("skip_trigram_scores", "QK not scaled", "s = queries @ keys.T / math.sqrt(d_head)", "s = queries @ keys.T"),
    ("skip_trigram_scores", "positions left out", "x = W_E + p_bar ", "x = W_E "),
    ("skip_trigram_scores", "OV not centred",
     "ov = ov - ov.mean(dim=0, keepdim=True)\n", "\n", "ov = ov - ov.mean(dim=1, keepdim=True)\n", "\n"),
    ("skip_trigram_scores", "OV centred over C only", "ov = ov - ov.mean(dim=0, keepdim=True)\n", "\n"),
    ("skip_trigram_scores", "softmax over the vocabulary",
     "attn = torch.sigmoid(s - s_background - math.log(others))", "attn = s.softmax(dim=1)"),
    ("skip_trigram_scores", "query and key swapped",
     "s = queries @ keys.T / math.sqrt(d_head)", "s = keys @ queries.T / math.sqrt(d_head)"),
    ("skip_trigram_scores", "raw QK times OV",
     "attn = torch.sigmoid(s - s_background - math.log(others))", "attn = s"),
    ("top_skip_trigrams", "max over heads",
     "total = S if total is None else total + S", "total = S if total is None else torch.maximum(total, S)"),
    ("top_skip_trigrams", "one head only", "for h in range(W_Q.shape[0]):", "for h in range(1):"),
    ("top_skip_trigrams", "worst first",
     "torch.topk(total.reshape(-1), k)", "torch.topk(total.reshape(-1), k, largest=False)"),
    ("top_skip_trigrams", "(B, A, C) order", "triples.append((A, B, C))", "triples.append((B, A, C))"),
]


@pytest.mark.parametrize("edit", MISTAKE_EDITS, ids=[f"{e[0]}: {e[1]}" for e in MISTAKE_EDITS])
def test_grader_names_each_catalogued_mistake(edit):
    from mechinterp_edu.grader.spec import exercises_for

    exercise, mistake, *pairs = edit
    source = LESSON.solution_path.read_text()
    for old, new in zip(pairs[::2], pairs[1::2]):
        assert source.count(old) == 1, old
        source = source.replace(old, new)
    result = _grade(source, [exercise])[exercise]
    message = next(m.message for e in exercises_for(3) if e.name == exercise for m in e.mistakes if m.name == mistake)
    assert not result.passed and result.score == 0
    assert message in result.feedback, result.feedback


def test_every_catalogued_mistake_is_tested():
    from mechinterp_edu.grader.spec import exercises_for
    catalogue = {(e.name, m.name) for e in exercises_for(3) for m in e.mistakes}
    assert catalogue == {(e[0], e[1]) for e in MISTAKE_EDITS}


def test_grader_accepts_a_tie_reordering_and_nothing_else():
    from mechinterp_edu.grader.spec import Case
    from mechinterp_edu.lessons.skip_trigrams.grading import compare_rankings

    args = _random(3, 4, 1, 2, 3, 9)
    args[3] = torch.zeros_like(args[3])          # W_K = 0: every attention share is the same,
    total = ref.total_skip_trigram_scores(*args)  # so S[A, B, C] does not depend on B
    assert torch.allclose(total, total[:, :1, :].expand_as(total))
    k = 6                                         # the best two (A, C) pairs, each with all 3 Bs
    expected = ref.top_skip_trigrams(*args, k)
    assert [t[1] for t in expected] == [0, 1, 2, 0, 1, 2]      # stable: lower index first
    case = Case("ties", tuple(args) + (k,))
    reordered = [expected[2], expected[0], expected[1]] + expected[3:]
    assert compare_rankings(reordered, expected, case) is None
    worst = ref.rank_triples(-total, 1)[0]
    assert compare_rankings(expected[:-1] + [worst], expected, case) is not None
    assert compare_rankings(expected[3:] + expected[:3], expected, case) is not None
    assert compare_rankings(expected[:-1], expected, case) is not None
