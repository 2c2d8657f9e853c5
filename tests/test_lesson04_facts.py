"""Every number lesson 4's text states ({{placeholders}}) against an independent computation:
numpy on the bridge's own weights, the model's forward pass, an enumeration of every input,
a closed-form operation count, the bug-lab bridges loaded from their checkpoints.
"""
from __future__ import annotations

import math
import re
from pathlib import Path

import numpy as np
import pytest
import torch

from mechinterp_edu.lessons.max_of_k import proofs as P
from mechinterp_edu.lessons.max_of_k.facts import facts, proof_results
from mechinterp_edu.lessons.max_of_k import reference as ref

pytestmark = pytest.mark.usefixtures("one_torch_thread")
ROOT = Path(__file__).resolve().parents[1]


@pytest.fixture(scope="module")
def F():
    return facts()


@pytest.fixture(scope="module")
def model():
    from mechinterp_edu.models.zoo import load_model
    return load_model("max_of_4", device="cpu", dtype=torch.float64)


@pytest.fixture(scope="module")
def np_tables(model):
    """The five tables in numpy, from the bridge's weights (not the checkpoint reader)."""
    w = {k: v.numpy() for k, v in ref.head_weights(model).items()}
    P_avg = w["W_pos"].mean(0)
    E_q, E_bar, P_hat = w["W_E"] + w["W_pos"][-1], w["W_E"] + P_avg, w["W_pos"] - P_avg
    s = math.sqrt(w["W_Q"].shape[1])
    QK, OVU = w["W_Q"] @ w["W_K"].T, w["W_V"] @ w["W_O"] @ w["W_U"]
    return dict(w=w, EQKE=E_q @ QK @ E_bar.T / s, EQKP=E_q @ QK @ P_hat.T / s, EU=E_q @ w["W_U"],
                EVOU=E_bar @ OVU, s=s, QK=QK)


def test_every_placeholder_is_a_fact(F):
    text = (ROOT / "lessons" / "04_max_of_k.md").read_text(encoding="utf-8")
    names = {m.group(1) for m in re.finditer(r"\{\{\s*([A-Za-z_][A-Za-z0-9_]*)", text)}
    assert names and names <= set(F), sorted(names - set(F))


def test_table_facts(F, np_tables):
    E = np_tables["EQKE"]
    steps = np.diff(E, axis=1)
    assert F["eqke_rise_fraction"] == pytest.approx((steps > 0).mean())
    low = F["low_keys"]
    assert F["down_steps_low"] == int((steps[:, : low - 1] <= 0).sum()) > 0
    assert F["down_steps_high"] == int((steps[:, low - 1:] <= 0).sum()) == 0
    assert F["rows_rising_high"] == E.shape[0]
    assert F["eqke_max"] == pytest.approx(np.abs(E).max())
    assert F["eqkp_max"] == pytest.approx(np.abs(np_tables["EQKP"]).max())
    diag = lambda M: int((M.argmax(1) == np.arange(M.shape[0])).sum())  # noqa: E731
    assert F["evou_diagonal_rows"] == diag(np_tables["EVOU"])
    assert F["eu_diagonal_rows"] == diag(np_tables["EU"])
    U, S, Vt = np.linalg.svd(E)
    assert F["sigma1"] == pytest.approx(S[0]) and F["sigma2"] == pytest.approx(S[1])
    assert F["sigma_ratio"] == pytest.approx(S[0] / S[1])
    assert F["rank_one_share"] == pytest.approx(S[0] ** 2 / (S ** 2).sum())
    assert F["size_corr"] == pytest.approx(abs(np.corrcoef(Vt[0], np.arange(len(S)))[0, 1]))
    assert F["query_spread"] == pytest.approx(np.abs(U[:, 0]).max() / np.abs(U[:, 0]).min())
    assert F["rho"] == pytest.approx(np.abs(E - S[0] * np.outer(U[:, 0], Vt[0])).max())
    assert F["two_rho"] == pytest.approx(2 * F["rho"])


def test_symptom_factors(F, np_tables):
    w, s, QK = np_tables["w"], np_tables["s"], np_tables["QK"]
    E, EQKP = np_tables["EQKE"], np_tables["EQKP"]
    dropped = w["W_E"] @ QK @ (w["W_E"] + w["W_pos"].mean(0)).T / s
    assert F["drop_pos_max_factor"] == pytest.approx(np.abs(dropped).max() / np.abs(E).max())
    assert F["drop_pos_std_factor"] == pytest.approx(dropped.std(ddof=1) / E.std(ddof=1))
    raw = (w["W_E"] + w["W_pos"][-1]) @ QK @ w["W_pos"].T / s
    assert F["raw_pos_max_factor"] == pytest.approx(np.abs(raw).max() / np.abs(EQKP).max())
    assert F["raw_pos_std_factor"] == pytest.approx(raw.std(ddof=1) / EQKP.std(ddof=1))
    assert F["inv_sqrt_d_head"] == pytest.approx(1 / math.sqrt(32)) and F["d_head"] == 32
    assert F["paper_n_models"] == 151          # Gross et al. 2024, abstract


def _enumerate(c, results):
    """Per-input: correct (float64 certificate), gap, and each proof's certified mask."""
    V, n = c.d_vocab, c.n_ctx
    counts = {"correct": 0, "wrong_gap_0_2": 0, "max_wrong_gap": 0, "left": [0] * V}
    counts.update({r.name: 0 for r in results[1:]})
    equal_only = True
    for q in range(V):
        tokens = P.all_inputs_with_last(V, n, q)
        ok = P.correct_grid(c, q).reshape(-1)
        top = tokens.sort(-1, descending=True).values
        gap = top[:, 0] - top[:, 1]
        counts["correct"] += int(ok.sum())
        counts["wrong_gap_0_2"] += int((~ok & (gap <= 2)).sum())
        if (~ok).any():
            counts["max_wrong_gap"] = max(counts["max_wrong_gap"], int(gap[~ok].max()))
        m, _, below = P.group_keys(tokens)
        for r in results[1:]:
            mask = P.certified_mask(r, tokens)
            counts[r.name] += int(mask.sum())
            if r.name == "cubic":
                d = torch.where(below < 0, torch.zeros_like(m), m - below)[~mask]
                for g, k in zip(*torch.unique(d, return_counts=True)):
                    counts["left"][int(g)] += int(k)
            if r.name.startswith("subcubic: no structure"):
                equal_only &= bool((tokens[mask] == tokens[mask][:, :1]).all())
    return counts, equal_only


def test_accuracy_and_proof_facts_by_enumerating_every_input(F, model):
    c = ref.circuits_of(model, dtype=torch.float64)
    results = proof_results("trained")
    counts, equal_only = _enumerate(c, results)
    N = F["n_inputs"]
    assert N == model.cfg.d_vocab ** model.cfg.n_ctx
    assert F["n_correct"] == counts["correct"] and F["n_wrong"] == N - counts["correct"]
    assert F["accuracy"] == counts["correct"] / N == F["brute_bound"]
    assert F["wrong_gap_0_2"] == counts["wrong_gap_0_2"] and F["max_wrong_gap"] == counts["max_wrong_gap"]
    for key, name in (("cubic", "cubic"), ("residual", "subcubic: rank one + max |residual|"),
                      ("sigma2", "subcubic: rank one + sigma2"), ("nostructure", "subcubic: no structure (norms)")):
        assert F[f"{key}_certified"] == counts[name], key
        assert F[f"{key}_bound"] == counts[name] / N, key
    assert equal_only and F["nostructure_certified"] <= F["d_vocab"]
    left = counts["left"]
    assert F["cubic_left_small_gap"] == pytest.approx(sum(left[: F["small_gap"] + 1]) / sum(left))
    assert F["cubic_gap_to_accuracy"] == pytest.approx(F["accuracy"] - F["cubic_bound"])
    # the model's own forward pass agrees with the certificate on a sample of inputs
    tokens = torch.randint(0, 64, (4096, 4), generator=torch.Generator().manual_seed(0))
    ok = ref.strictly_correct(ref.model_last_logits(model, tokens).double(), tokens.max(-1).values)
    grid = torch.stack([P.correct_grid(c, q) for q in range(64)], dim=-1)
    assert torch.equal(ok, grid[tokens[:, 0], tokens[:, 1], tokens[:, 2], tokens[:, 3]])


def test_flop_counts(F):
    """The brute force's count in closed form, from the operations the certificate is described to
    perform (a matrix product [a, k] @ [k, b] counts 2 a k b; any other elementwise operation,
    comparison or reduction step counts 1 per element).

    The tables: the mean of W_pos and P_hat (n d each), E_bar and E_q (V d each), the query side
    E_q W_Q / sqrt(d) (2 V d d + V d), W_V W_O W_U (2 d^3 + 2 d d V), the key sides E_bar W_K and
    P_hat W_K (2 V d d, 2 n d d) and their products with the query side (2 d V V, 2 d V n), then
    EU, EVOU (2 d V V each) and PVOU (2 d n V).
    Per query token: its scores (n V), shifted and exponentiated ((n-1) V each), EVOU + EU[q]
    (V^2), per free position the shifted table and its weighting (2 V^2 each), the query's own row
    (V) folded in (V^2), the partial sums over the middle positions (V^2 + ... + V^(n-1)), and per
    input the full sum and the best other logit (V^n each) and the strict comparison (V^(n-1))."""
    V, n, d = 64, 4, 32
    tables = (2 * n * d + 2 * V * d + (2 * V * d * d + V * d) + (2 * d ** 3 + 2 * d * d * V)
              + (2 * V * d * d + 2 * d * V * V) + (2 * n * d * d + 2 * d * V * n)
              + 2 * d * V * V + 2 * d * V * V + 2 * d * n * V)
    per_q = (n * V + 2 * (n - 1) * V + V * V + 2 * (n - 1) * V * V + V + V * V
             + sum(V ** k for k in range(2, n)) + 2 * V ** n + V ** (n - 1))
    assert F["brute_flops"] == V * per_q + tables
    assert F["brute_flops"] == F["untrained_brute_flops"]
    assert F["brute_flops"] > 50 * F["cubic_flops"] > 50 * V ** 3
    assert F["cubic_flops"] > F["residual_flops"] > F["sigma2_flops"] > F["nostructure_flops"] > V * V * d
    assert F["brute_over_cubic"] == pytest.approx(F["brute_flops"] / F["cubic_flops"])
    assert F["cubic_over_residual"] == pytest.approx(F["cubic_flops"] / F["residual_flops"])


def test_untrained_facts():
    from mechinterp_edu.lessons.max_of_k.facts import untrained_weights

    F = facts()
    w = untrained_weights()
    c = ref.circuits(*(w[k] for k in ref.WEIGHT_NAMES))
    assert F["untrained_brute_bound"] == ref.brute_force(c, device="cpu", dtype=torch.float64).accuracy
    short = [F[f"untrained_{key}_certified"] for key in ("cubic", "residual", "sigma2", "nostructure")]
    assert F["untrained_short_max_certified"] == max(short) <= F["d_vocab"]
    assert F["untrained_short_max_bound"] == max(short) / F["n_inputs"]
    # what they certify is right: the per-input soundness tests (test_lesson04_proofs) check it


def test_bug_lab_facts_from_the_bridges():
    from mechinterp_edu.lessons.max_of_k.bug_models import bug_weights, load_bug_model

    F = facts()
    from mechinterp_edu.models.zoo import load_model

    w_good = ref.head_weights(load_model("max_of_4", device="cpu", dtype=torch.float64))
    good = ref.circuits(*(w_good[k] for k in ref.WEIGHT_NAMES))
    for key, bugs in (("last_token", ("last_token_target",)), ("sqrt_d", ("sqrt_d_multiplier",))):
        bridge = load_bug_model(bugs).to(torch.float64)
        wb = ref.head_weights(bridge)
        direct = bug_weights(bugs)
        for k in ref.WEIGHT_NAMES:
            assert torch.equal(wb[k], direct[k]), (key, k)
        c = ref.circuits(*(wb[k] for k in ref.WEIGHT_NAMES))
        # a uniform sample through the bridge's own forward pass (standard error about 0.003)
        tokens = torch.randint(0, 64, (20000, 4), generator=torch.Generator().manual_seed(1))
        ok = ref.strictly_correct(ref.model_last_logits(bridge, tokens).double(), tokens.max(-1).values)
        assert ok.double().mean().item() == pytest.approx(F[f"bug_{key}_accuracy"], abs=0.015)
        assert F[f"bug_{key}_eu_diagonal"] == ref.copying_diagonal_fraction(c.EU)
        assert F[f"bug_{key}_eqke_factor"] == pytest.approx(float(c.EQKE.abs().max() / good.EQKE.abs().max()))
    assert F["bug_last_token_eu_diagonal"] > 0.9 and F["bug_last_token_accuracy"] < 0.5
