"""Numbers from code: the ``{{name}}`` placeholder engine of lesson_source, every lesson's
placeholders resolve, lessons 1-3 state no bare measured number, and every fact of lessons
1-3 equals an independent computation (a hand-written forward pass, the model's own forward
pass with a head ablated, the worked solutions' step-by-step scores)."""
from __future__ import annotations

import importlib.util
import math
import re

import pytest
import torch

from mechinterp_edu.course import LESSONS, get_lesson
from mechinterp_edu.lesson_source import (LessonFormatError, fill_placeholders, lesson_facts, load_lesson,
                                          parse_lesson, placeholders)

SYNTHETIC = '''---
number: 3
title: Synthetic
---
Intro with {{count:,}} items and $x = {{count:,}}$ and $$p = {{share:.1%}}$$.

::step one Step {{count}}
Inline `{{count}}` stays; so does a text fence:

```text
{{count}}
```

```python
print(f"{{count}}")
```

Last: {{share:.2%}}, {{ count }}.
'''


def _synthetic():
    return parse_lesson(SYNTHETIC, "lessons/03_synthetic.md")


# --------------------------------------------------------------------------- the engine
def test_placeholders_are_found_outside_code_only():
    found = placeholders(_synthetic())
    assert [(p.name, p.spec, p.in_math) for p in found] == [
        ("count", ",", False), ("count", ",", True), ("share", ".1%", True),
        ("count", "", False), ("share", ".2%", False), ("count", "", False)]
    assert [p.line for p in found if p.line] == [5, 5, 5, 17, 17]


def test_fill_formats_escapes_math_and_leaves_code_alone():
    lesson = fill_placeholders(_synthetic(), {"count": 110592, "share": 0.958333})
    intro = lesson.steps[0].blocks[0].text
    assert intro == r"Intro with 110,592 items and $x = 110{,}592$ and $$p = 95.8\%$$."
    step = lesson.steps[1]
    assert step.title == "Step 110592"
    text = "\n".join(b.text for b in step.blocks if b.kind == "markdown")
    assert "Inline `{{count}}` stays" in text and "```text\n{{count}}\n```" in text
    assert "Last: 95.83%, 110592." in text
    assert step.refs("code") == ['print(f"{{count}}")']


def test_unknown_placeholder_names_lesson_and_placeholder():
    with pytest.raises(LessonFormatError) as err:
        fill_placeholders(_synthetic(), {"count": 1})
    message = str(err.value)
    assert "03_synthetic.md:5" in message and "{{share:.1%}}" in message and "lesson 3" in message
    assert "count" in message          # lists the facts it has


def test_a_format_that_does_not_apply_is_a_clear_error():
    with pytest.raises(LessonFormatError, match=r"format ',' does not apply to 'abc'"):
        fill_placeholders(_synthetic(), {"count": "abc", "share": 0.5})


# --------------------------------------------------------------------------- every lesson
@pytest.mark.parametrize("info", LESSONS, ids=[i.slug for i in LESSONS])
def test_every_placeholder_resolves(info):
    raw = load_lesson(info.number, fill=False)
    found = placeholders(raw)
    filled = load_lesson(info.number)           # raises LessonFormatError on an unknown name
    assert not placeholders(filled)
    if found:
        assert {p.name for p in found} <= set(lesson_facts(info.number))


# Measured values a review found typed into lessons 1-3 (issue #16): they must come from facts.
KNOWN_MEASURED = {
    1: ["last bit", "2e-14"],
    2: ["48 × 48"],
    3: ["**100%**", "23 of the 24", "23 of 24", "95.8%", "110{,}592", "110,592", "4096", "12 logits",
        "0.15%", "98%", "Head 1 carries", "Head 0 pays", "head 0's output", "Try head 0 and head 1"],
}


def _prose(lesson) -> str:
    """Markdown outside code: fenced blocks and inline code removed."""
    text = "\n".join(b.text for s in lesson.steps for b in s.blocks if b.kind == "markdown")
    text = re.sub(r"```.*?```", "", text, flags=re.S)
    return re.sub(r"`[^`]*`", "", text)


def _spellings(value: float) -> set[str]:
    out = {f"{value:.{d}f}" for d in (1, 2, 3)} | {f"{value:.{d}%}" for d in (0, 1, 2)}
    return {s for s in out if len(s.strip("0.%")) >= 2}


@pytest.mark.parametrize("number", [1, 2, 3])
def test_lessons_1_to_3_state_no_bare_measured_number(number):
    text = _prose(load_lesson(number, fill=False))
    for phrase in KNOWN_MEASURED[number]:
        assert phrase not in text, f"lesson {number} types {phrase!r}; use a {{{{fact}}}} placeholder"


@pytest.mark.parametrize("info", LESSONS, ids=[i.slug for i in LESSONS])
def test_no_lesson_types_the_value_of_one_of_its_facts(info):
    """A measured (non-integer) fact spelled out in the prose means the text bypasses the fact."""
    text = _prose(load_lesson(info.number, fill=False))
    for name, value in lesson_facts(info.number).items():
        if isinstance(value, float):
            for spelled in _spellings(value):
                assert spelled not in text, f"lesson {info.number} types the value of fact {name!r} as {spelled!r}"


def test_the_forbidden_list_catches_the_old_text():
    """The check above would have failed on the text before conversion."""
    old = "It recovers **23 of the 24** planted skip-trigrams (95.8%) and bay by about 12 logits."
    assert all(p in old for p in ("23 of the 24", "95.8%", "12 logits"))
    assert "95.8%" in _spellings(23 / 24)


# --------------------------------------------------------------------------- independent truths
@pytest.fixture(scope="module")
def model64():
    from mechinterp_edu.models.zoo import load_model
    return load_model("skip_trigrams", device="cpu", dtype=torch.float64)


@pytest.fixture(scope="module")
def model32():
    from mechinterp_edu.models.zoo import load_model
    return load_model("skip_trigrams", device="cpu")


def _own_forward(model, tokens: torch.Tensor) -> torch.Tensor:
    """A plain einsum forward pass of the one-layer attention-only model (no library code)."""
    from mechinterp_edu.weights import layer_weights
    w = layer_weights(model, 0, dtype=torch.float64, device="cpu")
    W_E, W_pos, W_U, W_Q, W_K, W_V, W_O = (w[k] for k in ("W_E", "W_pos", "W_U", "W_Q", "W_K", "W_V", "W_O"))
    n = tokens.shape[-1]
    r = W_E[tokens] + W_pos[:n]
    q, k, v = (torch.einsum("bpm,hmd->bhpd", r, W) for W in (W_Q, W_K, W_V))
    s = torch.einsum("bhqd,bhkd->bhqk", q, k) / math.sqrt(W_Q.shape[-1])
    s = s.masked_fill(torch.triu(torch.ones(n, n, dtype=torch.bool), 1), float("-inf"))
    z = torch.einsum("bhqk,bhkd->bhqd", s.softmax(-1), v)
    return (r + torch.einsum("bhqd,hdm->bqm", z, W_O)) @ W_U


def test_lesson1_facts(model64):
    from mechinterp_edu.lessons.tensor_products import facts as module
    f = module.facts()
    assert f["n_heads"] == model64.cfg.n_heads
    assert f["d_vocab"] == model64.cfg.d_vocab
    tokens = module._check_tokens(type("S", (), {"config": {"d_vocab": model64.cfg.d_vocab,
                                                            "n_ctx": model64.cfg.n_ctx}})())
    assert f["n_check_sequences"] == tokens.shape[0] and f["n_check_positions"] == tokens.shape[1]
    with torch.no_grad():
        theirs = model64(tokens)
    ours = _own_forward(model64, tokens)
    own_error = float((ours - theirs).abs().max())
    # "agrees to rounding": both implementations sit at float64 rounding of logits of this size
    scale = float(theirs.abs().max())
    assert 0 < f["logit_max_abs_error"] <= 64 * torch.finfo(torch.float64).eps * scale
    assert own_error <= 64 * torch.finfo(torch.float64).eps * scale
    assert f["logit_max_abs"] == pytest.approx(float(ours.abs().max()), rel=1e-12)


def test_lesson2_facts(model64):
    f = lesson_facts(2)
    assert f["d_vocab"] == model64.W_E.shape[0]
    assert f["n_heads"] == model64.cfg.n_heads


def _load_solutions(number: int):
    info = get_lesson(number)
    spec = importlib.util.spec_from_file_location(f"solutions_{info.stem}", info.solution_path)
    module = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(module)
    return module


def test_lesson3_language_facts(model32):
    from mechinterp_edu.lessons.skip_trigrams import model as st
    f = lesson_facts(3)
    a, b, c = (sorted({t[i] for t in st.PLANTED_NAMES}) for i in range(3))
    assert (f["n_a_tokens"], f["n_b_tokens"], f["n_c_tokens"]) == (len(a), len(b), len(c))
    assert f["n_fillers"] == model32.cfg.d_vocab - 1 - len(a) - len(b) - len(c)
    assert f["d_vocab"] == model32.cfg.d_vocab and f["n_triples"] == model32.cfg.d_vocab ** 3
    assert f["n_planted"] == len(set(st.PLANTED_NAMES))


def test_lesson3_accuracy_by_a_hand_written_forward(model32):
    from mechinterp_edu.lessons.skip_trigrams import model as st
    f = lesson_facts(3)
    data = st.eval_batch()
    assert f["eval_sequences"] == data["tokens"].shape[0]
    logits = _own_forward(model32, data["tokens"][:, :-1])
    fires = data["fires"]
    correct = (logits.argmax(-1)[fires] == data["tokens"][:, 1:][fires]).double().mean().item()
    assert f["planted_accuracy"] == pytest.approx(correct, abs=1 / fires.sum().item())


def test_lesson3_recovery_by_the_step_by_step_solution(model32):
    from mechinterp_edu.lessons.skip_trigrams import model as st
    from mechinterp_edu.weights import layer_weights
    f = lesson_facts(3)
    sol = _load_solutions(3)
    w = layer_weights(model32, 0, dtype=torch.float64)
    args = [w[k] for k in ("W_E", "W_pos", "W_Q", "W_K", "W_V", "W_O", "W_U")]
    total = sum(sol.skip_trigram_scores(*args, head=h) for h in range(model32.cfg.n_heads))
    V = total.shape[0]
    top = total.reshape(-1).topk(len(st.PLANTED)).indices.tolist()
    found = [(i // (V * V), (i // V) % V, i % V) for i in top]
    planted = set(st.PLANTED)
    hits = sum(t in planted for t in found)
    assert f["n_recovered"] == hits
    assert f["recovery_rate"] == pytest.approx(hits / len(planted))
    intruders = [st.trigram_names(t) for t in found if t not in planted]
    assert all(name in f["intruders"] for name in intruders) and f["intruders"].count("`") == 2 * len(intruders)


def _bay_after(model, tokens, ablate: int | None = None) -> torch.Tensor:
    """Last-position logits from the model's own forward pass, head ``ablate`` zeroed (hook_z)."""
    def hook(z, hook):
        z[:, :, ablate] = 0.0
        return z
    hooks = [] if ablate is None else [("blocks.0.attn.hook_z", hook)]
    with torch.no_grad():
        return model.run_with_hooks(tokens, fwd_hooks=hooks)[:, -1].double()


def test_lesson3_bug_facts_by_ablating_heads(model32):
    from mechinterp_edu.lessons.skip_trigrams import facts as module
    from mechinterp_edu.lessons.skip_trigrams import model as st
    f = module.facts()
    bay = st.TOKEN_ID["bay"]
    with_keep, control = st.bug_contexts(module.BUG_CONTEXTS, module.BUG_SEED, "keep", "in")
    full_keep, full_control = _bay_after(model32, with_keep), _bay_after(model32, control)
    lifts = []
    for h in range(model32.cfg.n_heads):
        # one layer, no LayerNorm: full minus ablated logits is exactly head h's direct contribution
        own_keep = (full_keep - _bay_after(model32, with_keep, h))[:, bay].mean()
        own_control = (full_control - _bay_after(model32, control, h))[:, bay].mean()
        lifts.append(float(own_keep - own_control))
    assert f["bug_head"] == max(range(len(lifts)), key=lifts.__getitem__)
    assert f["repair_head"] == min(range(len(lifts)), key=lifts.__getitem__)
    assert f["bug_lift"] == pytest.approx(lifts[f["bug_head"]], rel=1e-4)
    assert f["p_bay_all_heads"] == pytest.approx(full_keep.softmax(-1)[:, bay].mean().item(), rel=1e-4)
    ablated = _bay_after(model32, with_keep, f["repair_head"]).softmax(-1)[:, bay].mean().item()
    assert f["p_bay_without_repair"] == pytest.approx(ablated, rel=1e-4)


# --------------------------------------------------------------------------- the disk cache
def _fake_lesson(tmp_path, monkeypatch):
    """A lesson-like object whose facts() counts its calls in a file."""
    import importlib
    import types

    pkg = tmp_path / "fake_facts_pkg"
    pkg.mkdir()
    (pkg / "__init__.py").write_text("")
    calls = tmp_path / "calls.txt"
    (pkg / "facts.py").write_text(
        "def facts():\n"
        f"    with open({str(calls)!r}, 'a') as fh:\n"
        "        fh.write('x')\n"
        "    return {'answer': 42, 'share': 0.5, 'name': 'keep'}\n")
    monkeypatch.syspath_prepend(str(tmp_path))
    importlib.invalidate_caches()
    lesson = types.SimpleNamespace(slug="fake", module="fake_facts_pkg",
                                   part=lambda name: importlib.import_module(f"fake_facts_pkg.{name}"))
    return lesson, lambda: len(calls.read_text()) if calls.exists() else 0


def test_facts_are_cached_on_disk_and_recomputed_when_the_key_changes(tmp_path, monkeypatch):
    from mechinterp_edu import facts as engine
    monkeypatch.setenv(engine.ENV_VAR, str(tmp_path / "cache"))
    monkeypatch.setattr(engine, "_MEMO", {})
    lesson, calls = _fake_lesson(tmp_path, monkeypatch)
    expected = {"answer": 42, "share": 0.5, "name": "keep"}
    assert engine.lesson_facts(lesson) == expected and calls() == 1
    engine._MEMO.clear()
    assert engine.lesson_facts(lesson) == expected and calls() == 1, "read from the disk cache"
    (written,) = (tmp_path / "cache").glob("fake-*.json")
    written.write_text("{not json")
    engine._MEMO.clear()
    assert engine.lesson_facts(lesson) == expected and calls() == 2, "a corrupt entry is recomputed"
    monkeypatch.setattr(engine, "cache_key", lambda slug: "another-key")
    engine._MEMO.clear()
    assert engine.lesson_facts(lesson) == expected and calls() == 3, "a new key recomputes"
    assert [p.name for p in (tmp_path / "cache").glob("fake-*.json")] == ["fake-another-key.json"], \
        "the stale entry is removed"
    monkeypatch.setenv(engine.ENV_VAR, "off")
    engine._MEMO.clear()
    engine.lesson_facts(lesson)
    engine._MEMO.clear()
    engine.lesson_facts(lesson)
    assert calls() == 5, "with the cache off, every process computes"


def test_cache_key_follows_code_and_checkpoints(tmp_path, monkeypatch):
    from mechinterp_edu import facts as engine
    (tmp_path / "lessons" / "x").mkdir(parents=True)
    (tmp_path / "models" / "checkpoints").mkdir(parents=True)
    code, checkpoint = tmp_path / "lessons" / "x" / "facts.py", tmp_path / "models" / "checkpoints" / "m.pt"
    code.write_text("A = 1\n")
    checkpoint.write_bytes(b"weights")
    monkeypatch.setattr(engine, "PACKAGE", tmp_path)
    first = engine.cache_key("x")
    assert engine.cache_key("x") == first and engine.cache_key("y") != first
    code.write_text("A = 2\n")
    second = engine.cache_key("x")
    assert second != first
    checkpoint.write_bytes(b"retrained weights")
    assert engine.cache_key("x") != second
