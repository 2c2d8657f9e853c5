"""The skip_trigrams toy model (lessons 1-3): data, recipe, checkpoint, errors."""
from __future__ import annotations

import pytest
import torch

from mechinterp_edu.lessons.skip_trigrams import model as st
from mechinterp_edu.models.zoo import CheckpointError, get_spec, load_model


@pytest.fixture(scope="module")
def shipped():
    return load_model("skip_trigrams", device="cpu")


def _rule_by_hand(tokens: list[int]) -> tuple[bool, set[int]]:
    """Plain-Python statement of the language: (valid, firing positions)."""
    pair = {(a, b): c for a, b, c in st.PLANTED}
    fires = set()
    for k in range(len(tokens) - 1):
        wanted = {pair[(tokens[j], tokens[k])] for j in range(k) if (tokens[j], tokens[k]) in pair}
        if len(wanted) > 1:
            return False, fires
        if wanted:
            fires.add(k)
            if tokens[k + 1] != wanted.pop():
                return False, fires
    return True, fires


def test_vocabulary_and_planted_set_are_consistent():
    assert len(st.VOCAB) == st.CONFIG["d_vocab"] == len(set(st.VOCAB))
    assert len(st.PLANTED) == len(set(st.PLANTED)) == 24
    # every (A, B) pair has exactly one C; A, B, C come from disjoint groups
    assert len({(a, b) for a, b, _ in st.PLANTED}) == len(st.PLANTED)
    groups = [set(st.encode(" ".join(g))) for g in (st.A_TOKENS, st.B_TOKENS, st.C_TOKENS)]
    for (a, b, c) in st.PLANTED:
        assert a in groups[0] and b in groups[1] and c in groups[2]
    # the bug trigrams are not planted, and share A and the Bs/Cs of two planted ones
    for bug in st.BUG_TRIGRAMS:
        assert bug not in st.PLANTED
    assert st.decode(st.encode("keep the in")) == ["keep", "the", "in"]
    assert st.encode("19 0 31") == [19, 0, 31]


@pytest.mark.parametrize("bad", ["keep banana", "48", "-1"])
def test_encode_rejects_bad_tokens_with_a_message(bad):
    with pytest.raises(ValueError, match="skip_trigrams|unknown token"):
        st.encode(bad)


def test_generated_sequences_obey_the_rule():
    data = st.sample_batch(300, torch.Generator().manual_seed(5))
    tokens, fires = data["tokens"], data["fires"]
    assert tokens.shape == (300, st.CONFIG["n_ctx"] + 1)
    assert (tokens[:, 0] == st.BOS_ID).all() and (tokens[:, 1:] != st.BOS_ID).all()
    for row, frow in zip(tokens.tolist(), fires.tolist()):
        valid, by_hand = _rule_by_hand(row)
        assert valid, st.decode(row)
        assert by_hand == {k for k, f in enumerate(frow) if f}
    # most rows carry a planted trigram, and the background is not only fillers
    assert fires.any(1).float().mean() > 0.8
    assert (tokens[:, 1:] > len(st.FILLERS)).sum() > tokens.shape[0] * 2


def test_forward_fast_matches_the_bridge(shipped):
    tokens = st.sample_batch(8, torch.Generator().manual_seed(1))["tokens"][:, :-1]
    with torch.no_grad():
        assert torch.allclose(st.forward_fast(shipped, tokens), shipped(tokens), atol=1e-4, rtol=1e-4)
        short = tokens[:, :3]
        assert torch.allclose(st.forward_fast(shipped, short), shipped(short), atol=1e-4, rtol=1e-4)


def test_reduced_recipe_learns_in_seconds():
    untrained = st.build()
    chance = st.planted_accuracy(untrained)
    result = st.train(steps=200, progress=False, device="cpu")
    acc = result.metrics["accuracy"]
    assert chance < 0.15
    assert acc > 0.3 and acc > chance + 0.25, (chance, acc)
    assert st.biases_are_zero(result.model)
    assert result.recipe["steps"] == 200 and result.recipe["seed"] == 0


def test_shipped_checkpoint_meets_its_targets(shipped):
    spec = get_spec("skip_trigrams")
    assert spec.checkpoint_path.stat().st_size < 1_000_000
    metrics = st.evaluate(shipped)                      # computed now, not read from the file
    assert metrics["accuracy"] >= st.TARGETS["accuracy"]
    assert metrics["recovery"] >= st.TARGETS["recovery"]
    # the skip-trigram bug is live in one head: keep ... in raises bay in that head
    assert metrics["bug_lift"] > 3.0


def test_biases_are_exactly_zero_and_frozen_after_loading(shipped):
    biases = {k: v for k, v in shipped.state_dict().items() if k.endswith("bias")}
    assert biases and all(bool((v == 0).all()) for v in biases.values())
    assert all(not p.requires_grad for n, p in shipped.named_parameters() if n.endswith("bias"))
    assert shipped.cfg.n_layers == 1 and shipped.cfg.n_heads >= 4 and shipped.cfg.attn_only


def test_missing_checkpoint_names_file_and_command(tmp_path):
    missing = tmp_path / "nope.pt"
    with pytest.raises(CheckpointError) as info:
        load_model("skip_trigrams", path=missing)
    assert str(missing) in str(info.value)
    assert "python -m mechinterp_edu train skip_trigrams" in str(info.value)


def test_corrupt_checkpoint_names_file_and_command(tmp_path):
    spec = get_spec("skip_trigrams")
    corrupt = tmp_path / "skip_trigrams.pt"
    corrupt.write_bytes(spec.checkpoint_path.read_bytes()[:5000])
    with pytest.raises(CheckpointError) as info:
        load_model("skip_trigrams", path=corrupt)
    assert str(corrupt) in str(info.value)
    assert "python -m mechinterp_edu train skip_trigrams" in str(info.value)


def test_bug_contexts_differ_only_at_the_source(shipped):
    with_a, control = st.bug_contexts(20, 0)
    diff = (with_a != control)
    assert (diff.sum(1) == 1).all()
    assert (with_a[diff] == st.TOKEN_ID["keep"]).all()
    assert (with_a[:, -1] == st.TOKEN_ID["in"]).all()
    assert st.PLANTED[:2] == (tuple(st.encode("keep in mind")), tuple(st.encode("keep at bay")))
