"""The shipped ``copy_suppressor`` model: its head meets (a)-(d), and the recipe reproduces.

(a) and (b) are recomputed through a second path (the plain-torch forward reading the checkpoint
directly, no TransformerLens); the loss and calibration numbers from a plain forward pass.
"""
from __future__ import annotations

import contextlib
import io
import math

import pytest
import torch

from mechinterp_edu.lessons.ioi_scores import copy_suppression as cs
from mechinterp_edu.lessons.ioi_scores import copy_suppressor as recipe
from mechinterp_edu.lessons.ioi_scores.copy_suppressor_data import NAME_IDS, NAMES, VOCAB
from mechinterp_edu.models.zoo import MAX_CHECKPOINT_BYTES, get_spec, load_model, read_checkpoint, save_checkpoint

pytestmark = pytest.mark.usefixtures("one_torch_thread")
LAYER, HEAD = recipe.COPY_HEAD


@pytest.fixture(scope="module")
def model():
    with contextlib.redirect_stdout(io.StringIO()):
        return load_model("copy_suppressor", device="cpu")


@pytest.fixture(scope="module")
def plain():
    """The checkpoint as TransformerLens-shaped weights run by the plain-torch forward."""
    from mechinterp_edu.lessons.ioi_scores.forward import IOIForward, weights_from_state_dict

    payload = read_checkpoint("copy_suppressor")
    return IOIForward(weights_from_state_dict(payload["config"], payload["state_dict"], torch.float64),
                      payload["config"])


@pytest.fixture(scope="module")
def heldout():
    return recipe.heldout(2000)


def test_zoo_entry(model):
    spec = get_spec("copy_suppressor")
    assert spec.checkpoint_path.stat().st_size <= MAX_CHECKPOINT_BYTES
    assert model.ioi_vocab.words == list(VOCAB)
    assert model.ioi_vocab.decode(NAME_IDS.tolist()) == list(NAMES)
    assert LAYER >= 1 and model.cfg.n_layers > LAYER


def ov_plain(plain):
    eff = plain.run_with_cache(torch.stack([torch.zeros_like(NAME_IDS), NAME_IDS], 1))[1]["blocks.0.hook_resid_post"][:, 1]
    normed = torch.nn.functional.layer_norm(eff, (eff.shape[-1],), eps=plain.cfg.eps)
    return normed @ plain.W_V[LAYER, HEAD] @ plain.W_O[LAYER, HEAD] @ plain.W_U[:, NAME_IDS]


def test_a_negative_copying_ov(model, plain):
    ov = cs.ov_matrix(model, LAYER, HEAD, NAME_IDS)
    assert cs.own_rank_fraction(ov, 3, lowest=True) >= 0.8
    # second path: effective embeddings and weights from the checkpoint, read without the bridge
    eff = plain.run_with_cache(torch.stack([torch.zeros_like(NAME_IDS), NAME_IDS], 1))[1]["blocks.0.hook_resid_post"][:, 1]
    normed = torch.nn.functional.layer_norm(eff, (eff.shape[-1],), eps=plain.cfg.eps)
    ov2 = normed @ plain.W_V[LAYER, HEAD] @ plain.W_O[LAYER, HEAD] @ plain.W_U[:, NAME_IDS]
    own = ov2.diagonal()
    assert float(((ov2 < own[:, None]).sum(-1) < 3).double().mean()) >= 0.8
    torch.testing.assert_close(ov, ov2, rtol=1e-4, atol=1e-4)


def test_b_prediction_attention_qk(model, plain):
    qk = cs.qk_matrix(model, LAYER, HEAD, NAME_IDS)
    assert cs.own_rank_fraction(qk, 1, lowest=False) >= 0.8
    eff = plain.run_with_cache(torch.stack([torch.zeros_like(NAME_IDS), NAME_IDS], 1))[1]["blocks.0.hook_resid_post"][:, 1]
    ln = lambda x: torch.nn.functional.layer_norm(x, (x.shape[-1],), eps=plain.cfg.eps)  # noqa: E731
    q = ln(plain.W_U[:, NAME_IDS].T) @ plain.W_Q[LAYER, HEAD] + plain.b_Q[LAYER, HEAD]
    k = ln(eff) @ plain.W_K[LAYER, HEAD] + plain.b_K[LAYER, HEAD]
    qk2 = q @ k.T / math.sqrt(q.shape[-1])
    assert float((qk2.argmax(-1) == torch.arange(len(NAMES))).double().mean()) >= 0.8
    torch.testing.assert_close(qk, qk2, rtol=1e-4, atol=1e-4)


def test_c_behaviour_and_calibration(model, plain, heldout):
    tokens, answers = heldout
    res = cs.behaviour(model, LAYER, HEAD, tokens, answers, NAME_IDS)
    assert res["n_predicted_present"] >= 200
    assert res["attn_to_x"] >= 0.3 and res["dla_x"] < 0
    assert res["p_x_ablated"] > res["p_x"]
    assert res["loss"] < res["loss_ablated"]
    # the loss with the head, from the plain forward's own logits
    logits = plain(tokens)[:, -1]
    loss = torch.nn.functional.cross_entropy(logits, answers)
    assert res["loss"] == pytest.approx(float(loss), rel=1e-4)


def test_d_four_terms_beat_the_null(model, heldout):
    tokens, _ = heldout
    res = cs.four_term_shares(cs.four_term_inputs(model, LAYER, HEAD, tokens[:500], NAME_IDS), n_null=100)
    assert res["d_par_par_largest"]
    assert res["d_share"] > res["d_null_hi"]
    # the four shares add up to the whole net score
    assert sum(res[f"d_{t}"] for t in cs.TERMS) == pytest.approx(1.0, abs=1e-9)


def test_reduced_recipe_trains_and_round_trips(tmp_path, monkeypatch):
    monkeypatch.setitem(recipe.RECIPE, "batch_size", 32)
    with contextlib.redirect_stdout(io.StringIO()):
        result = recipe.train(steps=150, device="cpu", progress=False, eval_prompts=200)
    assert result.metrics["final_loss"] < math.log(len(NAMES)) - 0.5     # well below uniform over names
    assert result.recipe["steps"] == 150
    path = save_checkpoint(get_spec("copy_suppressor"), result, tmp_path / "cs.pt")
    with contextlib.redirect_stdout(io.StringIO()):
        again = load_model("copy_suppressor", device="cpu", path=path)
    tokens, _ = recipe.heldout(8)
    with torch.no_grad():
        torch.testing.assert_close(again(tokens), result.model(tokens), rtol=1e-5, atol=1e-5)


def _plain_ablated_logits(plain, tokens, mean_z):
    """Mean-ablate head LAYER.HEAD by hand in the plain forward (the head is in the last layer)."""
    from mechinterp_edu.lessons.ioi_scores.forward import gelu_new, ln_scale

    assert LAYER == plain.cfg.n_layers - 1
    _, cache = plain.run_with_cache(tokens)
    h = f"blocks.{LAYER}."
    z = cache[h + "attn.hook_z"][:, :, HEAD]
    delta = (mean_z[: tokens.shape[1]] - z) @ plain.W_O[LAYER, HEAD]
    mid = cache[h + "hook_resid_mid"] + delta
    normed, _ = ln_scale(mid)
    final = mid + gelu_new(normed @ plain.W_in[LAYER] + plain.b_in[LAYER]) @ plain.W_out[LAYER] + plain.b_out[LAYER]
    return ln_scale(final)[0] @ plain.W_U + plain.b_U


def test_lesson_facts_against_the_plain_forward(plain, heldout):
    from mechinterp_edu.lessons.ioi_scores.copy_suppression_charts import copy_suppressor_facts

    facts = copy_suppressor_facts()
    tokens, answers = heldout
    assert facts["cs_n_names"] == len(NAMES) and facts["cs_ov_chance"] == pytest.approx(3 / len(NAMES))
    assert facts["cs_head"] == f"{LAYER}.{HEAD}"
    assert facts["cs_ov_n"] == int(((ov_plain(plain) < ov_plain(plain).diagonal()[:, None]).sum(-1) < 3).sum())
    assert facts["cs_qk_n"] >= 0.8 * len(NAMES) and facts["cs_ov_n"] >= 0.8 * len(NAMES)
    logits, cache = plain.run_with_cache(tokens)
    probs = logits[:, -1].softmax(-1)
    assert facts["cs_loss"] == pytest.approx(float(torch.nn.functional.cross_entropy(logits[:, -1], answers)), rel=1e-4)
    # the prediction before the head, and whether it is in the list
    lens = torch.nn.functional.layer_norm(cache[f"blocks.{LAYER}.hook_resid_pre"][:, -1], (plain.cfg.d_model,),
                                          eps=plain.cfg.eps) @ plain.W_U + plain.b_U
    x = NAME_IDS[lens[:, NAME_IDS].argmax(-1)]
    keep = (tokens == x[:, None]).any(-1)
    assert facts["cs_n_predicted_present"] == int(keep.sum())
    rows = torch.arange(len(tokens))
    assert facts["cs_p_x"] == pytest.approx(float(probs[rows, x][keep].mean()), rel=1e-3)
    attn = (cache[f"blocks.{LAYER}.attn.hook_pattern"][:, HEAD, -1] * (tokens == x[:, None])).sum(-1)
    assert facts["cs_attn_to_x"] == pytest.approx(float(attn[keep].mean()), rel=1e-4)
    mean_z = cache[f"blocks.{LAYER}.attn.hook_z"][:, :, HEAD].mean(0)
    ablated = _plain_ablated_logits(plain, tokens, mean_z)[:, -1].softmax(-1)
    assert facts["cs_p_x_ablated"] == pytest.approx(float(ablated[rows, x][keep].mean()), rel=1e-3)
    assert facts["cs_loss_ablated"] == pytest.approx(float(-ablated[rows, answers].log().mean()), rel=1e-4)
    # ECE by brute force: ten equal-width confidence bins
    conf, pred = probs.max(-1)
    ece = 0.0
    for b in range(10):
        inside = (conf >= b / 10) & ((conf < (b + 1) / 10) if b < 9 else (conf <= 1))
        if inside.any():
            ece += float(inside.double().mean()) * abs(float((pred[inside] == answers[inside]).double().mean())
                                                        - float(conf[inside].mean()))
    assert facts["cs_ece"] == pytest.approx(ece, abs=1e-6)


def test_lesson_text_claims():
    """The qualitative words of the lesson's step: 'almost as much', 'part of its attention'."""
    from mechinterp_edu.lessons.ioi_scores.copy_suppression_charts import copy_suppressor_facts

    facts = copy_suppressor_facts()
    assert 0.5 * facts["cs_share_par_par"] < facts["cs_share_largest_other"] < facts["cs_share_par_par"]
    assert facts["cs_attn_to_x"] < 0.9
    assert facts["cs_loss_ablated"] > facts["cs_loss"] and facts["cs_ece_ablated"] > facts["cs_ece"]


def test_live_charts_show_the_measures(model):
    from mechinterp_edu.live.registry import compute

    ov = compute("ioi_scores.copy_suppressor_ov")[0]
    assert ov["names whose own logit is among the 3 most suppressed"] == pytest.approx(
        cs.own_rank_fraction(cs.ov_matrix(model, LAYER, HEAD, NAME_IDS), 3, True), abs=1e-4)
    qk = compute("ioi_scores.copy_suppressor_qk")[0]
    assert qk["names whose own key scores highest"] == pytest.approx(
        cs.own_rank_fraction(cs.qk_matrix(model, LAYER, HEAD, NAME_IDS), 1, False), abs=1e-4)
    behaviour = compute("ioi_scores.copy_suppressor_behaviour")
    assert behaviour[0]["mean attention END -> X"] >= 0.3
    for item in behaviour[1:]:
        assert hasattr(item, "to_dict") or hasattr(item, "columns")
