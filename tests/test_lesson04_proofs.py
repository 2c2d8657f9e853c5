"""Lesson 4's compact proofs: soundness input by input, against independent truths.

Truths used: the model's own forward pass (small models), the float32 brute force of the
reference module (a second implementation), a plain enumeration of every input, and the
per-input verdicts of the brute force. A proof is sound when every input it certifies is
one the model gets strictly right; its bound is then at most the accuracy.
"""
from __future__ import annotations

import json
import subprocess
import sys

import pytest
import torch

from mechinterp_edu.lessons.max_of_k import proofs as P
from mechinterp_edu.lessons.max_of_k.proofs_cubic import cubic_proof
from mechinterp_edu.lessons.max_of_k.proofs_subcubic import SUBCUBIC, no_structure_proof
from mechinterp_edu.lessons.max_of_k import reference as ref

pytestmark = pytest.mark.usefixtures("one_torch_thread")


def _recipe():
    from mechinterp_edu.lessons.max_of_k import model as recipe
    return recipe


@pytest.fixture(scope="module")
def shipped():
    return _recipe().weights_from_checkpoint(torch.float64)


@pytest.fixture(scope="module")
def untrained():
    recipe = _recipe()
    torch.manual_seed(0)
    return ref.head_weights(recipe.build(recipe.CONFIG))


@pytest.fixture(scope="module")
def partially_trained():
    """The recipe stopped after 150, 300 and 600 steps (and one run with another seed)."""
    recipe = _recipe()
    out = {}
    for steps, seed in ((150, 0), (300, 0), (600, 0), (400, 7)):
        result = recipe.train(steps=steps, device="cpu", progress=False, evaluate_model=False, seed=seed)
        out[f"{steps} steps, seed {seed}"] = ref.head_weights(result.model)
    return out


def _tables(w):
    return ref.circuits(*(w[k] for k in ref.WEIGHT_NAMES))


def _check_sound(w, label):
    """Every strategy: certified inputs are correct, input by input; brute force == accuracy."""
    c = _tables(w)
    V, n = c.d_vocab, c.n_ctx
    results = P.all_proofs(w)
    brute = results[0]
    reference = ref.brute_force(c, device="cpu", dtype=torch.float64)
    assert brute.n_certified == reference.n_correct, label
    assert brute.bound == reference.accuracy, label
    counted = {r.name: 0 for r in results[1:]}
    for q in range(V):
        tokens = P.all_inputs_with_last(V, n, q)
        correct = P.correct_grid(c, q).reshape(-1).cpu()
        for r in results[1:]:
            mask = P.certified_mask(r, tokens)
            bad = mask & ~correct
            assert not bad.any(), f"{label}: {r.name} certifies {tokens[bad][0].tolist()}, which is wrong"
            counted[r.name] += int(mask.sum())
    for r in results[1:]:
        assert counted[r.name] == r.n_certified, (label, r.name)
        assert 0.0 <= r.bound <= brute.bound, (label, r.name)
    return results


# --------------------------------------------------------------------------- counting
@pytest.mark.parametrize("V,n", [(5, 1), (6, 2), (5, 3), (4, 4), (3, 5)])
def test_group_counts_match_a_plain_enumeration(V, n):
    tokens = torch.cartesian_prod(*[torch.arange(V)] * n).reshape(-1, n)
    m, q, c = P.group_keys(tokens)
    for mm in range(V):
        assert int(((m == mm) & (c < 0)).sum()) == P.count_inputs(V, n, mm, -1, "any")
        for cc in range(mm):
            here = (m == mm) & (c == cc)
            assert int(here.sum()) == P.count_inputs(V, n, mm, cc, "any")
            assert int((here & (q == mm)).sum()) == P.count_inputs(V, n, mm, cc, "max")
            assert int((here & (q == cc)).sum()) == P.count_inputs(V, n, mm, cc, "c")
            for qq in range(cc):
                assert int((here & (q == qq)).sum()) == P.count_inputs(V, n, mm, cc, "below")


def test_brute_force_matches_the_model_forward_pass_on_small_models():
    """A plain enumeration through the table formula (itself checked against the model) and
    strictly_correct give the brute-force certificate's count exactly."""
    for V, n, seed, scale in ((7, 3, 0, 3.0), (5, 4, 1, 4.0), (9, 2, 2, 3.0)):
        w = ref.random_weights(V, n, 8, 8, seed=seed, scale=scale)
        tokens = torch.cartesian_prod(*[torch.arange(V)] * n).reshape(-1, n)
        logits = ref.logits_from_circuits(tokens, *(w[k] for k in ref.WEIGHT_NAMES))
        truth = int(ref.strictly_correct(logits, tokens.max(-1).values).sum())
        assert P.brute_force_proof(w).n_certified == truth


def test_ties_count_as_wrong():
    """All-zero weights: every logit ties, so the strictly-largest task gets nothing right."""
    w = {k: torch.zeros_like(v) for k, v in ref.random_weights(6, 3, 4, 4).items()}
    for r in P.all_proofs(w):
        assert r.n_certified == 0, r.name


# --------------------------------------------------------------------------- soundness
def test_every_proof_is_sound_on_the_shipped_model(shipped):
    results = _check_sound(shipped, "shipped")
    by = {r.name: r for r in results}
    assert by["cubic"].bound >= 0.9                       # the acceptance
    assert min(r.flops for r in results if r.kind == "subcubic") < by["cubic"].flops
    assert by["subcubic: rank one + max |residual|"].bound > 0.5
    assert no_structure_proof(shipped).bound < 0.001      # no structure: nearly vacuous
    assert by["brute force"].flops >= 64 ** 5             # at least one operation per logit of every input


def test_every_proof_is_sound_on_the_untrained_model(untrained):
    results = _check_sound(untrained, "untrained")
    assert results[0].bound < 0.1


def test_every_proof_is_sound_on_partially_trained_models(partially_trained):
    for label, w in partially_trained.items():
        _check_sound(w, label)


@pytest.mark.parametrize("V,n,seed", [(7, 3, 0), (5, 4, 1), (8, 2, 2), (6, 1, 3)])
def test_every_proof_is_sound_on_small_random_models(V, n, seed):
    w = ref.random_weights(V, n, 6, 5, seed=seed, scale=4.0)
    _check_sound(w, f"random V={V} n={n}")


def test_huge_positional_score_gaps_neither_crash_nor_break_soundness():
    """Positions whose scores differ by more than ~745 make exp(-gap) underflow to 0 in float64;
    the subcubic proofs' position ratio must stay finite (it is computed in log space)."""
    w = ref.random_weights(6, 4, 6, 4, seed=8, scale=6.0)
    c = _tables(w)
    EQKP = c.EQKP
    assert float((EQKP[:, :, None] - EQKP[:, None, :]).amin(0).max()) > 800     # the regime under test
    tokens = torch.cartesian_prod(*[torch.arange(6)] * 4).reshape(-1, 4)
    logits = ref.logits_from_tables(tokens, c)                    # torch's stable softmax
    assert bool(torch.isfinite(logits).all())
    correct = ref.strictly_correct(logits, tokens.max(-1).values)
    results = P.all_proofs(w, brute=False)
    for r in results:
        mask = P.certified_mask(r, tokens)
        assert int(mask.sum()) == r.n_certified and not (mask & ~correct).any(), r.name
    assert results[0].n_certified > 0                             # the cubic proof still certifies inputs
    # the brute force cannot shift these scores into exp()'s range: one clear sentence, not a wrong count
    with pytest.raises(ValueError, match="cannot evaluate this model"):
        P.brute_force_proof(w)


def test_an_unsound_variant_is_caught(shipped, monkeypatch):
    """Pessimal ablation replaced by an optimistic one (other tokens at their *smallest* score):
    the per-input check must find a certified input that the model gets wrong."""
    from mechinterp_edu.lessons.max_of_k import proofs_cubic

    monkeypatch.setattr(proofs_cubic.torch, "cummax", lambda x, dim: torch.cummin(x, dim=dim))
    bad = proofs_cubic.cubic_proof(shipped)
    c = _tables(shipped)
    found = None
    for q in range(c.d_vocab):
        tokens = P.all_inputs_with_last(c.d_vocab, c.n_ctx, q)
        wrong = P.certified_mask(bad, tokens) & ~P.correct_grid(c, q).reshape(-1)
        if wrong.any():
            found = tokens[wrong][0]
            break
    assert found is not None, "the optimistic variant should certify some wrong input"


# --------------------------------------------------------------------------- devices
@pytest.mark.skipif(not torch.cuda.is_available(), reason="no CUDA device")
def test_proofs_agree_on_cuda(shipped):
    cpu = P.all_proofs(shipped)
    gpu = P.all_proofs({k: v.cuda() for k, v in shipped.items()})
    for a, b in zip(cpu, gpu):
        assert a.n_certified == b.n_certified and a.flops == b.flops, a.name


# --------------------------------------------------------------------------- CLI
def _cli(*args):
    return subprocess.run([sys.executable, "-m", "mechinterp_edu", "proofs", *args], capture_output=True,
                          text=True, timeout=300)


def test_cli_json_on_the_shipped_model(shipped):
    out = _cli("--model", "max_of_4", "--json")
    assert out.returncode == 0, out.stderr
    data = json.loads(out.stdout)
    assert data["model"] == "max_of_4"
    assert data["accuracy"] == ref.brute_force(_tables(shipped), device="cpu", dtype=torch.float64).accuracy
    kinds = [s["kind"] for s in data["strategies"]]
    assert kinds[0] == "brute" and "cubic" in kinds and "subcubic" in kinds
    for s in data["strategies"]:
        assert set(s) == {"name", "kind", "bound", "flops", "seconds"}
        assert isinstance(s["flops"], int) and s["bound"] <= data["accuracy"]


def test_cli_weights_file_with_head_axes(tmp_path):
    w = ref.random_weights(6, 3, 8, 4, seed=5, scale=3.0)
    raw = {k: (v[None, None] if k in ("W_Q", "W_K", "W_V", "W_O") else v).float() for k, v in w.items()}
    path = tmp_path / "w.pt"
    torch.save(raw, path)
    out = _cli("--weights", str(path), "--json")
    assert out.returncode == 0, out.stderr
    data = json.loads(out.stdout)
    assert data["accuracy"] == P.brute_force_proof({k: v.double() for k, v in w.items()}).bound
    text = _cli("--weights", str(path))
    assert text.returncode == 0 and "cubic" in text.stdout


@pytest.mark.parametrize("content", ["not a tensor file", "dict-missing", "bad-shape"])
def test_cli_bad_file_gets_one_sentence_and_exit_code_2(tmp_path, content):
    path = tmp_path / "bad.pt"
    if content == "not a tensor file":
        path.write_text("hello")
    else:
        w = ref.random_weights(6, 3, 8, 4, seed=5)
        if content == "dict-missing":
            w.pop("W_U")
        else:
            w["W_U"] = torch.zeros(5, 6)
        torch.save(w, path)
    out = _cli("--weights", str(path))
    assert out.returncode == 2
    message = out.stderr.strip()
    assert message.startswith("error: ") and "\n" not in message and "Traceback" not in out.stderr


def test_cli_scores_too_wide_for_the_brute_force_get_one_sentence(tmp_path):
    path = tmp_path / "wide.pt"
    torch.save(ref.random_weights(6, 4, 6, 4, seed=8, scale=6.0), path)
    out = _cli("--weights", str(path), "--json")
    assert out.returncode == 2 and out.stdout == ""
    message = out.stderr.strip()
    assert message.startswith("error: ") and "\n" not in message and "cannot evaluate this model" in message


def test_cli_rejects_a_model_that_is_not_max_of_k():
    out = _cli("--model", "skip_trigrams", "--json")
    assert out.returncode == 2 and out.stdout == ""
    assert "one-layer, one-head" in out.stderr
