"""The shipped max_of_4 model: its recipe, its checkpoint, and the brute-force evaluation.

Every figure is computed fresh from the checkpoint (never read back from its stored metrics),
and the brute force is checked against the model's own forward pass and against a plain
enumeration on small models.
"""
from __future__ import annotations

import itertools
import math
import time

import pytest
import torch

from mechinterp_edu.models.zoo import MAX_CHECKPOINT_BYTES, get_spec, load_model, read_checkpoint
from mechinterp_edu.lessons.max_of_k import bench as mk_bench
from mechinterp_edu.lessons.max_of_k import reference as ref

SPEC = get_spec("max_of_4")


pytestmark = pytest.mark.usefixtures("one_torch_thread")


@pytest.fixture(scope="module")
def model32():
    return load_model("max_of_4", device="cpu", dtype=torch.float32)


@pytest.fixture(scope="module")
def model64():
    return load_model("max_of_4", device="cpu", dtype=torch.float64)


@pytest.fixture(scope="module")
def tables(model64):
    return ref.circuits_of(model64, dtype=torch.float64)


@pytest.fixture(scope="module")
def brute(tables):
    return ref.brute_force(tables, device="cpu")


# --------------------------------------------------------------------------- checkpoint and architecture
def test_checkpoint_is_small_and_matches_the_architecture(model32):
    path = SPEC.checkpoint_path
    assert path.exists() and path.stat().st_size <= MAX_CHECKPOINT_BYTES
    cfg = model32.cfg
    assert (cfg.n_layers, cfg.n_heads, cfg.d_model, cfg.d_head, cfg.d_vocab, cfg.n_ctx) == (1, 1, 32, 32, 64, 4)
    assert cfg.attn_only and cfg.normalization_type is None
    payload = read_checkpoint("max_of_4")
    for key, value in payload["state_dict"].items():
        if key.endswith("bias"):
            assert torch.count_nonzero(value) == 0, f"{key} must stay exactly zero"
    assert payload["recipe"]["steps"] == 3000 and payload["recipe"]["batch_size"] == 128
    assert payload["recipe"]["lr"] == 1e-3 and payload["recipe"]["bugs"] == []


def test_built_model_has_frozen_zero_biases():
    torch.manual_seed(0)
    model = SPEC.build(SPEC.config)
    biases = [(n, p) for n, p in model.named_parameters() if n.endswith("bias")]
    assert biases, "the native attention carries bias parameters"
    for name, p in biases:
        assert not p.requires_grad and torch.count_nonzero(p) == 0, name


def test_weights_from_checkpoint_equal_the_bridge(model32):
    from mechinterp_edu.lessons.max_of_k.model import weights_from_checkpoint

    fast = weights_from_checkpoint(torch.float32)
    slow = ref.head_weights(model32, dtype=torch.float32, device="cpu")
    for key in ref.WEIGHT_NAMES:
        assert torch.equal(fast[key], slow[key]), key


def test_head_weights_refuse_biases():
    torch.manual_seed(1)
    model = SPEC.build(SPEC.config)
    with torch.no_grad():
        for name, p in model.named_parameters():
            if name.endswith("q._original_component.bias"):
                p.fill_(0.5)
    with pytest.raises(ValueError, match="b_Q is not zero"):
        ref.head_weights(model)


# --------------------------------------------------------------------------- acceptance figures (computed fresh)
def test_shipped_accuracy_by_brute_force_is_at_least_99_9_percent(brute):
    assert brute.n_inputs == 64 ** 4 == 16_777_216
    assert brute.accuracy >= 0.999, f"brute-force accuracy {brute.accuracy:.6%}"
    assert sum(brute.totals_by_gap) == brute.n_inputs
    assert sum(brute.errors_by_gap) == brute.n_wrong
    # errors concentrate at small gaps: none where the max beats the runner-up by 10 or more
    assert sum(brute.errors_by_gap[10:]) == 0


def test_brute_force_takes_at_most_10_seconds_on_cpu(tables):
    start = time.perf_counter()
    result = ref.brute_force(tables, device="cpu")
    seconds = time.perf_counter() - start
    assert result.n_inputs == 16_777_216
    assert seconds <= 10.0, f"brute force took {seconds:.1f} s"


def test_eqke_is_nearly_rank_one_with_a_monotone_size_direction(tables):
    ratio, size, query = ref.eqke_rank_one(tables.EQKE)
    assert ratio >= 100, f"sigma1/sigma2 = {ratio:.1f}"
    index = torch.arange(64, dtype=torch.float64)
    corr = float(torch.corrcoef(torch.stack([size, index]))[0, 1])
    assert abs(corr) >= 0.95 and corr > 0          # > 0: the sign convention
    # independent check of the ratio: singular values from the eigenvalues of EQKE^T EQKE
    eig = torch.linalg.eigvalsh(tables.EQKE.T @ tables.EQKE).flip(0).clamp(min=0).sqrt()
    assert math.isclose(ratio, float(eig[0] / eig[1]), rel_tol=1e-6)
    # the query side is one-signed (every query orders keys the same way)
    assert bool((query > 0).all())


def test_evaluate_reports_the_same_figures(model64, brute):
    metrics = SPEC.evaluate(model64)
    assert metrics["accuracy"] == brute.accuracy
    assert metrics["sigma_ratio"] >= 100 and metrics["size_direction_abs_corr"] >= 0.95


# --------------------------------------------------------------------------- the tables against the model
def _random_tokens(n: int, seed: int) -> torch.Tensor:
    return torch.randint(0, 64, (n, 4), generator=torch.Generator().manual_seed(seed))


def test_eqke_plus_eqkp_reproduce_the_models_scores(model64, model32, tables):
    tokens = _random_tokens(3000, 1)
    scores = ref.model_last_scores(model64, tokens)          # from hook_q and hook_k
    table = tables.EQKE[tokens[:, -1:], tokens] + tables.EQKP[tokens[:, -1]]
    assert (scores - table).abs().max() <= 1e-5
    # the float32 model agrees too, to float32 rounding of scores of size ~50
    scores32 = ref.model_last_scores(model32, tokens).double()
    assert (scores32 - table).abs().max() <= 1e-5 * table.abs().max()


def test_logits_from_circuits_reproduce_the_models_logits(model64, tables):
    tokens = _random_tokens(3000, 2)
    w = ref.head_weights(model64)
    got = ref.logits_from_circuits(tokens, *(w[k] for k in ref.WEIGHT_NAMES))
    want = ref.model_last_logits(model64, tokens)
    assert (got - want).abs().max() <= 1e-5


def test_brute_force_verdicts_equal_the_models_forward_pass(model32, tables, brute):
    """The brute force's own grids, indexed at random inputs and at every input it gets wrong,
    against the model's argmax on those inputs."""
    tokens = torch.cat([_random_tokens(4000, 3), brute.wrong_examples])
    logits = ref.model_last_logits(model32, tokens)
    model_right = logits.argmax(-1) == tokens.max(-1).values
    grids = {}
    ours = []
    for row in tokens.tolist():
        q = row[-1]
        if q not in grids:
            grids[q] = ref.grid_correct(tables, q)
        ours.append(bool(grids[q][tuple(row[:-1])]))
    ours = torch.tensor(ours)
    assert torch.equal(ours, model_right)
    assert not ours[-brute.wrong_examples.shape[0]:].any(), "the listed wrong examples must be wrong"


# --------------------------------------------------------------------------- brute force on small models, by enumeration
def _enumerate(c: ref.Circuits) -> tuple[int, list[int], list[int]]:
    V, n = c.d_vocab, c.n_ctx
    tokens = torch.tensor(list(itertools.product(range(V), repeat=n)))
    logits = ref.logits_from_tables(tokens, c)
    right = ref.strictly_correct(logits, tokens.max(-1).values)
    gaps = ref.gaps_of(tokens)
    errors = torch.bincount(gaps[~right], minlength=V).tolist()
    totals = torch.bincount(gaps, minlength=V).tolist()
    return int(right.sum()), errors, totals


@pytest.mark.parametrize("d_vocab,n_ctx,seed", [(6, 4, 0), (7, 3, 1), (5, 2, 2), (9, 1, 3), (4, 5, 4)])
def test_brute_force_equals_enumeration_on_small_models(d_vocab, n_ctx, seed):
    # Scaled-up random weights: many inputs right, many wrong, so both paths are exercised.
    w = ref.random_weights(d_vocab, n_ctx, 8, 4, seed=seed, scale=3.0)
    c = ref.circuits(*(w[k] for k in ref.WEIGHT_NAMES))
    result = ref.brute_force(c, device="cpu", chunk=2)
    n_correct, errors, totals = _enumerate(c)
    assert result.n_inputs == d_vocab ** n_ctx
    assert (result.n_correct, result.errors_by_gap, result.totals_by_gap) == (n_correct, errors, totals)
    assert result.totals_by_gap == ref.gap_totals(d_vocab, n_ctx)


def test_brute_force_counts_ties_as_wrong():
    """All-zero weights give equal logits everywhere: nothing is right (argmax would claim token 0)."""
    w = {k: torch.zeros_like(v) for k, v in ref.random_weights(5, 3, 4, 4).items()}
    c = ref.circuits(*(w[k] for k in ref.WEIGHT_NAMES))
    assert ref.brute_force(c, device="cpu").n_correct == 0


def test_brute_force_falls_back_to_float64_for_wide_scores():
    w = ref.random_weights(6, 3, 8, 4, seed=3, scale=4.0)      # scores spanning over 100
    c = ref.circuits(*(w[k] for k in ref.WEIGHT_NAMES))
    lowest_query = int((c.EQKE.diagonal() + c.EQKP[:, -1]).argmin())
    with pytest.raises(FloatingPointError):                     # float32 would overflow here
        ref._position_tables(c, lowest_query, torch.float32)
    result = ref.brute_force(c, device="cpu")
    assert (result.n_correct, result.errors_by_gap) == _enumerate(c)[:2]
    huge = ref.circuits(*(v * 8 for v in (w[k] for k in ref.WEIGHT_NAMES)))
    with pytest.raises(ValueError, match="overflows even in float64"):
        ref.brute_force(huge, device="cpu")


# --------------------------------------------------------------------------- the recipe
def test_reduced_recipe_retrains_in_seconds_above_chance():
    start = time.perf_counter()
    result = SPEC.train(steps=300, device="cpu", progress=False)
    seconds = time.perf_counter() - start
    assert result.recipe["steps"] == 300 and result.recipe["bugs"] == []
    assert result.metrics["accuracy"] > 0.5 > 1 / 64, result.metrics
    assert seconds < 45, f"300 steps took {seconds:.1f} s"


def test_recipe_is_deterministic():
    a = SPEC.train(steps=15, device="cpu", progress=False, evaluate_model=False).model
    b = SPEC.train(steps=15, device="cpu", progress=False, evaluate_model=False).model
    for (name, pa), pb in zip(a.state_dict().items(), b.state_dict().values()):
        assert torch.equal(pa, pb), name


def test_training_bugs_change_what_is_learned():
    last = SPEC.train(steps=150, device="cpu", progress=False, bugs=["last_token_target"],
                      evaluate_model=False).model
    c = ref.circuits_of(last)
    # trained to copy the query: the direct path grows a copying diagonal
    assert ref.copying_diagonal_fraction(c.EU) >= 0.9
    tokens = _random_tokens(2000, 4)
    assert (ref.model_last_logits(last, tokens).argmax(-1) == tokens[:, -1]).double().mean() > 0.9


def test_sqrt_d_training_bug_multiplies_the_scores_by_sqrt_d():
    from mechinterp_edu.lessons.max_of_k.model import _forward_last

    torch.manual_seed(3)
    model = SPEC.build(SPEC.config).eval()
    tokens = _random_tokens(64, 5)
    w = ref.head_weights(model, dtype=torch.float32)
    with torch.no_grad():
        hooked = _forward_last(model, tokens, frozenset({"sqrt_d_multiplier"}))
    # an independent forward pass from the weights with scores q.k * sqrt(d)
    resid = w["W_E"][tokens] + w["W_pos"]
    scores = torch.einsum("bh,bph->bp", resid[:, -1] @ w["W_Q"], resid @ w["W_K"]) * math.sqrt(32)
    out = (resid[:, -1] + torch.einsum("bp,bpd->bd", scores.softmax(-1), resid @ w["W_V"]) @ w["W_O"]) @ w["W_U"]
    assert torch.allclose(hooked, out, atol=1e-4)


def test_bad_training_arguments_get_clear_messages():
    with pytest.raises(ValueError, match="Unknown training bug"):
        SPEC.train(steps=1, progress=False, bugs=["no_such_bug"])
    with pytest.raises(ValueError, match="Unknown recipe setting"):
        SPEC.train(steps=1, progress=False, learning_rate=3)
    with pytest.raises(ValueError, match="steps must be"):
        SPEC.train(steps=-1, progress=False)


def test_bench_quick_compares_with_the_model_loop_on_the_same_inputs():
    """bench(quick) runs the brute force and the model's own float64 forward pass over every
    input starting with token 0 and reports whether their counts (and errors by gap) agree."""
    rows = mk_bench.bench(quick=True)
    assert rows and rows[0].baseline_seconds is not None and rows[0].seconds > 0
    assert "same count as the baseline" in rows[0].note, rows[0].note
