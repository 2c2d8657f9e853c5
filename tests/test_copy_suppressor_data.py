"""The no-repeat name lists the copy_suppressor model is trained on."""
from __future__ import annotations

import math

import pytest
import torch

from mechinterp_edu.lessons.ioi_scores.copy_suppressor_data import (
    N_NAMES, NAMES, VOCAB, ListTask, bayes_next, sample_lists, successor_logits,
)

TASK = ListTask(n_topics=8, balanced=4, p_no_topic=0.5)


def test_vocab_and_names():
    assert VOCAB[0] == "<bos>" and VOCAB[1:N_NAMES + 1] == NAMES and len(set(VOCAB)) == len(VOCAB)


def test_lists_never_repeat_a_name_and_topics_sit_at_position_1():
    lists = sample_lists(3000, TASK, seed=5)
    assert lists.shape == (3000, TASK.length + 1) and (lists[:, 0] == 0).all()
    topical = lists[:, 1] > N_NAMES
    assert abs(float(topical.double().mean()) - 0.5) < 0.05
    assert (lists[:, 2:] <= N_NAMES).all() and (lists[:, 1:] > 0).all()
    for row in lists.tolist():
        names = [t for t in row[1:] if t <= N_NAMES]
        assert len(set(names)) == len(names)


def test_same_seed_same_lists():
    assert torch.equal(sample_lists(50, TASK, seed=1), sample_lists(50, TASK, seed=1))
    assert not torch.equal(sample_lists(50, TASK, seed=1), sample_lists(50, TASK, seed=2))


@pytest.mark.parametrize("topic", [0, 3, 8])
def test_balanced_tables(topic):
    logits = successor_logits(TASK, topic)
    assert torch.isinf(logits.diagonal()).all()
    order = logits.argsort(-1, descending=True)
    for r in range(TASK.balanced):      # every name is the r-th favourite of exactly one name
        assert sorted(order[:, r].tolist()) == list(range(N_NAMES))


def test_first_step_follows_the_table():
    """Monte Carlo: the second name of topic-free lists, given the first, matches the table."""
    task = ListTask(n_topics=8, balanced=4, p_no_topic=1.0)
    lists = sample_lists(40_000, task, seed=11)
    probs = successor_logits(task, 8).softmax(-1)
    first, second = lists[:, 1] - 1, lists[:, 2] - 1
    for a in (0, 17):
        picked = second[first == a]
        freq = torch.bincount(picked, minlength=N_NAMES).double() / len(picked)
        assert (freq - probs[a].double()).abs().max() < 4 * math.sqrt(0.25 / len(picked))


def test_bayes_next_against_a_loop():
    lists = sample_lists(30, TASK, seed=3)
    got = bayes_next(lists, TASK)
    tables = [successor_logits(TASK, t).softmax(-1) for t in range(TASK.n_topics + 1)]
    for i, row in enumerate(lists.tolist()):
        topic = row[1] - 1 - N_NAMES if row[1] > N_NAMES else TASK.n_topics
        for t in range(2, len(row)):
            seen = {x - 1 for x in row[1: t + 1] if x <= N_NAMES}
            w = torch.tensor([0.0 if y in seen else float(tables[topic][row[t] - 1, y]) for y in range(N_NAMES)])
            torch.testing.assert_close(got[i, t], w / w.sum(), rtol=1e-5, atol=1e-6)
