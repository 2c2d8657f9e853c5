"""The copy-suppression measures (a)-(d), on models whose answer is known.

* A hand-built model whose head 1.0 suppresses the predicted, present name by construction
  (``copy_suppression_fixture``): every measure must find it; its sign-flipped twin (a copying
  head) must fail (a) and (c).
* A random GPT-2 with scrambled LayerNorms and biases: (a) and (b) against second
  implementations that go through the model's own hooks or torch's LayerNorm.
* ECE and mean-ablation against brute force and a no-op.
"""
from __future__ import annotations

import math

import pytest
import torch
from copy_suppression_fixture import build_hand_model, hand_prompts, successor

from mechinterp_edu.lessons.ioi_scores import copy_suppression as cs

pytestmark = pytest.mark.usefixtures("one_torch_thread")


@pytest.fixture(scope="module")
def hand():
    return build_hand_model(sign=-1.0)


@pytest.fixture(scope="module")
def copier():
    return build_hand_model(sign=+1.0)


@pytest.fixture(scope="module")
def random_model():
    from mechinterp_edu.models.gpt2 import make_random_gpt2

    return make_random_gpt2(seed=3, n_layers=2, n_heads=2, d_model=32, d_vocab=13, n_ctx=8,
                            dtype=torch.float64)


def test_hand_model_predicts_the_successor_before_the_head(hand):
    model, names = hand
    tokens = torch.stack([torch.zeros_like(names), names], 1)
    _, cache = model.run_with_cache(tokens)
    lens = cs.ln(cache["blocks.1.hook_resid_pre"][:, 1].double()) @ model.W_U.double()
    assert lens[:, names].argmax(-1).tolist() == [successor(i) for i in range(len(names))]


def test_hand_model_passes_a_and_b(hand, copier):
    model, names = hand
    (row,) = cs.head_scan(model, names)
    assert row["ov_top3"] == 1.0 and row["qk_top1"] == 1.0
    (row,) = cs.head_scan(copier[0], names)
    assert row["ov_top3"] == 0.0          # the copier raises a name's own logit the most
    assert row["qk_top1"] == 1.0          # same QK circuit


def test_hand_model_behaviour(hand, copier):
    tokens, answers = hand_prompts(200)
    model, names = hand
    res = cs.behaviour(model, 1, 0, tokens, answers, names)
    # the successor of the last name is in a 12-of-16 list about 3 times in 4
    assert 100 < res["n_predicted_present"] < 200
    assert res["attn_to_x"] > 0.99 and res["dla_x_negative"] == 1.0
    assert res["p_x_ablated"] > 10 * res["p_x"] and res["ablation_raises_p_x"] == 1.0
    assert res["loss"] < res["loss_ablated"]
    flipped = cs.behaviour(copier[0], 1, 0, tokens, answers, names)
    assert flipped["dla_x"] > 0 and flipped["ablation_raises_p_x"] == 0.0
    assert cs.passes({**res, "ov_top3": 1.0, "qk_top1": 1.0})["c"]
    assert not cs.passes(flipped)["c"]


def test_hand_model_four_terms(hand):
    model, names = hand
    tokens, _ = hand_prompts(120, seed=1)
    inp = cs.four_term_inputs(model, 1, 0, tokens, names)
    res = cs.four_term_shares(inp, n_null=40)
    # every key is exactly its name's effective embedding and the query's W_Q image is its
    # f-part, so the parallel x parallel term is the whole score difference
    assert res["d_q_par_k_par"] == pytest.approx(1.0, abs=1e-4)
    assert res["d_par_par_largest"] and res["d_null_hi"] < 0.05
    assert cs.passes(res)["d"]


def test_ov_matrix_matches_the_models_own_values(random_model):
    model = random_model
    names = torch.arange(1, 13)
    tokens = torch.stack([torch.zeros_like(names), names], 1)
    _, cache = model.run_with_cache(tokens)
    for head in range(2):
        v = cache["blocks.1.attn.hook_v"][:, 1, head] - model.b_V[1, head]       # biases are left out
        expected = v @ model.W_O[1, head] @ model.W_U[:, names]
        got = cs.ov_matrix(model, 1, head, names)
        torch.testing.assert_close(got, expected.double(), rtol=1e-9, atol=1e-9)


def test_qk_matrix_against_a_loop_with_torch_layer_norm(random_model):
    model = random_model
    names = torch.arange(1, 13)
    eff = cs.effective_embeddings(model, names)
    got = cs.qk_matrix(model, 1, 1, names)
    W_Q, W_K, b_Q, b_K = (t.detach().double() for t in (model.W_Q[1, 1], model.W_K[1, 1],
                                                          model.b_Q[1, 1], model.b_K[1, 1]))
    for i, x in enumerate(names.tolist()):
        u = model.W_U[:, x].detach().double()
        q = torch.nn.functional.layer_norm(u, (u.shape[0],), eps=model.cfg.eps) @ W_Q + b_Q
        for j in range(len(names)):
            k = torch.nn.functional.layer_norm(eff[j], (eff.shape[1],), eps=model.cfg.eps) @ W_K + b_K
            assert got[i, j].item() == pytest.approx(float(q @ k) / math.sqrt(W_Q.shape[1]), rel=1e-9)


def test_own_rank_fraction_by_hand():
    m = torch.tensor([[-5.0, 1.0, 2.0], [0.0, 3.0, -1.0], [9.0, 8.0, 7.0]])
    # diagonal ranks from the bottom: row 0 first, row 1 last, row 2 first
    assert cs.own_rank_fraction(m, 1, lowest=True) == pytest.approx(2 / 3)
    assert cs.own_rank_fraction(m, 1, lowest=False) == pytest.approx(1 / 3)
    assert cs.own_rank_fraction(m, 3, lowest=True) == 1.0


def test_ece_by_brute_force():
    gen = torch.Generator().manual_seed(0)
    probs = torch.rand(500, 5, generator=gen, dtype=torch.float64).pow(3)
    probs = probs / probs.sum(-1, keepdim=True)
    answers = torch.randint(5, (500,), generator=gen)
    conf, pred = probs.max(-1)
    total = 0.0
    for b in range(10):
        lo, hi = b / 10, (b + 1) / 10
        inside = [i for i in range(500) if lo <= conf[i] < hi or (b == 9 and conf[i] == 1.0)]
        if inside:
            acc = sum(float(pred[i] == answers[i]) for i in inside) / len(inside)
            mean_conf = sum(float(conf[i]) for i in inside) / len(inside)
            total += len(inside) / 500 * abs(acc - mean_conf)
    assert cs.expected_calibration_error(probs, answers) == pytest.approx(total, abs=1e-12)


def test_mean_ablation_is_a_no_op_when_every_prompt_is_the_same(random_model):
    tokens = torch.tensor([[0, 3, 5, 7, 2, 9]]).repeat(4, 1)
    res = cs.behaviour(random_model, 1, 0, tokens, torch.full((4,), 4), torch.arange(1, 13))
    assert res["loss"] == pytest.approx(res["loss_ablated"], abs=1e-9)


def test_bad_head_is_one_sentence(random_model):
    with pytest.raises(cs.CopySuppressionInputError, match="layer must be in 1..1"):
        cs.ov_matrix(random_model, 0, 0, torch.arange(1, 5))
    with pytest.raises(cs.CopySuppressionInputError, match="head must be in 0..1"):
        cs.qk_matrix(random_model, 1, 2, torch.arange(1, 5))
