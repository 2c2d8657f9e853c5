"""The ioi_small toy: its data split, word tokenizer, recipe and shipped checkpoint."""
from __future__ import annotations

import contextlib
import io

import pytest
import torch

from mechinterp_edu.lessons.ioi_scores import model as ioi
from mechinterp_edu.models.zoo import get_spec, load_model, read_checkpoint, save_checkpoint
from mechinterp_edu.lessons.ioi_scores import data


def _quiet(fn, *args, **kwargs):
    with contextlib.redirect_stdout(io.StringIO()):
        return fn(*args, **kwargs)


@pytest.fixture(scope="module")
def model():
    return _quiet(load_model, "ioi_small", device="cpu")


# --------------------------------------------------------------------------- data
def test_vocabulary_is_deterministic_and_covers_every_word():
    assert data.build_vocab() == data.build_vocab() == ioi.CONFIG["vocab"]
    vocab = data.WordVocab(data.build_vocab())
    assert len(data.NAMES) >= 50 and vocab.bos_id == 0
    for split in data.SPLITS:
        for prompt in data.sample_prompts(40, split, seed=1):
            ids = vocab.encode(prompt.words)
            assert vocab.decode(ids) == [data.BOS] + prompt.words
    with pytest.raises(ValueError, match="unknown word"):
        vocab.encode("When Zebedee arrived")


def test_positions_point_at_the_right_words():
    for split in data.SPLITS:
        for p in data.sample_prompts(60, split, seed=3):
            words = [data.BOS] + p.words
            assert words[p.positions["IO"]] == p.io
            assert words[p.positions["S1"]] == p.s and words[p.positions["S2"]] == p.s
            assert p.positions["S1"] < p.positions["S2"] < p.positions["END"] == len(words) - 1
            assert (p.positions["IO"] < p.positions["S1"]) == (p.order == "ABBA")
            assert len(words) == data.SEQ_LEN


def test_held_out_pairs_fillers_and_template_never_appear_in_training():
    train_pairs, test_pairs = data.name_pair_split()
    train_pairs = {frozenset(p) for p in train_pairs}
    test_pairs = {frozenset(p) for p in test_pairs}
    assert not train_pairs & test_pairs and len(test_pairs) >= 300
    train = data.sample_prompts(3000, "train", seed=0)
    seen_pairs = {frozenset((p.io, p.s)) for p in train}
    seen_words = {w for p in train for w in p.words}
    assert seen_pairs <= train_pairs
    assert not seen_words & set(data.HELDOUT_PLACES + data.HELDOUT_OBJECTS)
    assert {p.template for p in train} == set(range(len(data.TRAIN_TEMPLATES)))
    assert "then" not in seen_words, "the held-out template's own word leaked into training"
    for split in ("test", "heldout_template"):
        prompts = data.sample_prompts(500, split, seed=0)
        assert {frozenset((p.io, p.s)) for p in prompts} <= test_pairs
        assert {w for p in prompts for w in p.words} & set(data.HELDOUT_PLACES + data.HELDOUT_OBJECTS)
    held = data.sample_prompts(50, "heldout_template", seed=0)
    assert {p.template for p in held} == {len(data.TRAIN_TEMPLATES)}
    orders = [p.order for p in train]
    assert orders.count("ABBA") == orders.count("BABA")


def test_subword_encoding_keeps_word_positions():
    """encode_with_tokenizer (the GPT-2 path) with a fake tokenizer that splits some words."""
    prompts = data.sample_prompts(5, "test", seed=0)

    def encode_word(text):            # two tokens for long words, one otherwise
        return [len(text), 1] if len(text) > 6 else [len(text)]

    batch = data.encode_with_tokenizer(prompts, encode_word, bos_id=0)
    for row, p in enumerate(prompts):
        assert int(batch.tokens[row, batch.positions["IO"][row]]) == encode_word(" " + p.io)[0]
        assert int(batch.tokens[row, batch.positions["S2"][row]]) == encode_word(" " + p.s)[0]
        assert int(batch.positions["END"][row]) == len([t for w in p.words for t in
                                                        encode_word(w if w in ",." else " " + w)])


# --------------------------------------------------------------------------- model
def test_toy_is_a_gpt2_bridge_in_compatibility_mode(model):
    from transformer_lens.model_bridge import TransformerBridge

    assert isinstance(model, TransformerBridge)
    assert model.cfg.n_layers == 3 and model.cfg.n_heads == 4 and model.cfg.d_model == 64
    assert model.cfg.normalization_type == "LN" and not model.cfg.attn_only
    state = model.state_dict()
    assert torch.allclose(state["blocks.0.ln1.weight"], torch.ones(64))   # LayerNorm folded
    assert model.W_U.mean(0).abs().max() < 1e-5                           # unembedding centred
    assert model.ioi_vocab.words == ioi.CONFIG["vocab"]


def test_shipped_checkpoint_metric_recomputed_fresh(model):
    payload = read_checkpoint("ioi_small")
    fresh = ioi.evaluate(model, n=payload["recipe"]["eval_prompts"])
    assert fresh["accuracy"] >= 0.95, f"held-out accuracy {fresh['accuracy']}"
    assert fresh["accuracy_heldout_template"] >= 0.5
    for key in ("accuracy", "accuracy_heldout_template", "accuracy_train"):
        assert abs(fresh[key] - payload["metrics"][key]) <= 2e-3, key
    assert payload["recipe"]["steps"] == ioi.RECIPE["steps"] and payload["recipe"]["seed"] == 0
    assert get_spec("ioi_small").checkpoint_path.stat().st_size <= 5 * 1024 * 1024


def test_model_answers_like_its_argmax_metric(model):
    batch = data.encode_prompts(data.sample_prompts(64, "test", seed=99), model.ioi_vocab)
    with torch.no_grad():
        logits = model(batch.tokens)[:, -1]
    rows = torch.arange(len(batch))
    assert (logits.argmax(-1) == batch.io_tokens).double().mean() >= 0.95
    assert (logits[rows, batch.io_tokens] > logits[rows, batch.s_tokens]).double().mean() >= 0.95


def test_reduced_recipe_retrains_in_seconds_and_round_trips(tmp_path):
    result = _quiet(ioi.train, steps=4, device="cpu", progress=False, batch_size=16, eval_prompts=32)
    assert set(result.metrics) >= {"accuracy", "accuracy_heldout_template", "accuracy_train", "final_loss"}
    assert result.recipe["steps"] == 4 and torch.isfinite(torch.tensor(result.metrics["final_loss"]))
    again = _quiet(ioi.train, steps=4, device="cpu", progress=False, batch_size=16, eval_prompts=32)
    for (name, a), (_, b) in zip(result.model.state_dict().items(), again.model.state_dict().items()):
        assert torch.equal(a, b), f"the recipe is not deterministic ({name})"
    path = save_checkpoint(get_spec("ioi_small"), result, tmp_path / "ioi_small.pt")
    loaded = _quiet(load_model, "ioi_small", device="cpu", path=path)
    tokens = data.encode_prompts(data.sample_prompts(4, "test"), loaded.ioi_vocab).tokens
    with torch.no_grad():
        assert torch.allclose(loaded(tokens), result.model(tokens), atol=1e-5)
