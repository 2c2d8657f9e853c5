"""Training data for the ``copy_suppressor`` toy: name lists where nobody is named twice.

A *list* is ``<bos>`` followed by names. Each name has favourite successors: a fixed random
ranking of the other names, the r-th favourite drawn with weight ``exp(-r / temperature)``.
A name already in the list is never drawn again (sampling without replacement), so the
best next-token prediction is "the current name's favourites, minus those already said".

That is the situation copy suppression is thought to pay off in: a cheap early mechanism
(the successor table, read from the current token) predicts names regardless of context,
and a later head that attends to whichever predicted name is already present and pushes
its logit down corrects all of those predictions at once.

Options (``ListTask``) mix in lists that *do* repeat (``p_repeat``: the second half copies
names from the first, so being present is informative rather than always wrong) and label
noise (``label_noise``: a fraction of next names drawn uniformly from all names).
Everything is deterministic given a seed.
"""
from __future__ import annotations

import math
from dataclasses import dataclass

import torch

from mechinterp_edu.lessons.ioi_scores.data import NAMES as IOI_NAMES

BOS = "<bos>"

# 40 first names: the first 40 of lesson 5's IOI names, all distinct from its template words.
NAMES: tuple[str, ...] = IOI_NAMES[:40]
# Topic words: a list may open with one; each topic has its own successor table.
TOPICS: tuple[str, ...] = ("family", "work", "school", "sport", "music", "travel", "garden", "church")
VOCAB: tuple[str, ...] = (BOS,) + NAMES + TOPICS
N_NAMES = len(NAMES)
NAME_IDS = torch.arange(1, N_NAMES + 1)          # token ids of the names (<bos> is 0)


@dataclass(frozen=True)
class ListTask:
    """How lists are drawn. ``length``: names per list (the model reads <bos> + length - 1)."""

    length: int = 16
    temperature: float = 1.5      # successor weights exp(-rank / temperature)
    table_seed: int = 0           # which successor ranking (fixed for a model)
    p_repeat: float = 0.0         # fraction of lists whose second half re-draws from the first
    label_noise: float = 0.0      # fraction of names drawn uniformly (still without repeats)
    n_topics: int = 0             # >0: position 1 holds a topic word that picks the table
    balanced: int = 0             # the first `balanced` favourite ranks are permutations of the names
    p_no_topic: float = 0.0       # with topics: fraction of lists without a topic word (own table)


def _favourites(task: ListTask, gen: torch.Generator) -> torch.Tensor:
    """[N_NAMES, N_NAMES - 1]: row a lists the other names, favourite first.

    With ``balanced = K``, column r < K is a permutation of the names (every name is the r-th
    favourite of exactly one name), so no name is predicted more often than another."""
    fav = torch.empty(N_NAMES, N_NAMES - 1, dtype=torch.long)
    used = torch.eye(N_NAMES, dtype=torch.bool)
    names = torch.arange(N_NAMES)
    for r in range(task.balanced):
        for _ in range(100_000):
            perm = torch.randperm(N_NAMES, generator=gen)
            if not used[names, perm].any():
                break
        else:  # pragma: no cover - never seen for K <= 6
            raise RuntimeError("could not draw a balanced successor table; lower `balanced`.")
        fav[:, r] = perm
        used[names, perm] = True
    for a in range(N_NAMES):
        rest = names[~used[a]]
        fav[a, task.balanced:] = rest[torch.randperm(len(rest), generator=gen)]
    return fav


def successor_logits(task: ListTask, topic: int = 0) -> torch.Tensor:
    """[N_NAMES, N_NAMES] log-weights of the next name given the current one (-inf on the diagonal)."""
    gen = torch.Generator().manual_seed(task.table_seed * 1000 + topic)
    fav = _favourites(task, gen)
    logits = torch.full((N_NAMES, N_NAMES), -math.inf)
    ranks = -torch.arange(N_NAMES - 1, dtype=torch.float32) / task.temperature
    logits.scatter_(1, fav, ranks.expand(N_NAMES, -1).contiguous())
    return logits


def sample_lists(n: int, task: ListTask, seed: int) -> torch.Tensor:
    """``n`` lists as token ids [n, 1 + length] (<bos> first), reproducibly from ``seed``."""
    if n < 1:
        raise ValueError(f"ask for at least one list (got n={n}).")
    gen = torch.Generator().manual_seed(seed)
    n_tables = task.n_topics + 1 if task.n_topics else 1
    tables = torch.stack([successor_logits(task, t) for t in range(n_tables)])
    topic = torch.randint(max(1, task.n_topics), (n,), generator=gen)
    if not task.n_topics:
        no_topic = torch.ones(n, dtype=torch.bool)
    elif task.p_no_topic > 0:
        no_topic = torch.rand(n, generator=gen) < task.p_no_topic
    else:
        no_topic = torch.zeros(n, dtype=torch.bool)
    topic = torch.where(no_topic, n_tables - 1, topic)
    length = task.length
    names = torch.empty(n, length, dtype=torch.long)
    present = torch.zeros(n, N_NAMES, dtype=torch.bool)
    rows = torch.arange(n)
    repeat = torch.rand(n, generator=gen) < task.p_repeat
    half = length // 2
    current = torch.randint(N_NAMES, (n,), generator=gen)
    names[:, 0] = current
    present[rows, current] = True
    for t in range(1, length):
        logits = tables[topic, current].clone()
        noisy = torch.rand(n, generator=gen) < task.label_noise
        logits[noisy] = 0.0
        allowed = ~present
        if t >= half:   # repeating lists draw their second half from names already said
            allowed = torch.where(repeat[:, None], present, allowed)
            allowed[rows, current] = allowed[rows, current] & ~repeat
        logits = logits.masked_fill(~allowed, -math.inf)
        logits = torch.where(torch.isinf(logits).all(-1, keepdim=True), allowed.float().log(), logits)
        nxt = torch.multinomial(logits.softmax(-1), 1, generator=gen)[:, 0]
        names[:, t] = nxt
        present[rows, nxt] = True
        current = nxt
    tokens = torch.cat([torch.zeros(n, 1, dtype=torch.long), names + 1], dim=1)
    if task.n_topics:   # a topic word at position 1 replaces the last name
        topical = torch.cat([tokens[:, :1], (1 + N_NAMES + topic)[:, None], tokens[:, 1:-1]], dim=1)
        tokens = torch.where(no_topic[:, None], tokens, topical)
    return tokens


def bayes_next(tokens: torch.Tensor, task: ListTask) -> torch.Tensor:
    """The ideal next-name distribution of a no-repeat list after each prefix: [n, seq, N_NAMES].

    Position 0 (<bos>) is uniform; afterwards the current name's successor weights over the
    names not yet in the list (label noise mixed in). Lists that repeat are not modelled.
    """
    n_tables = task.n_topics + 1 if task.n_topics else 1
    tables = torch.stack([successor_logits(task, t) for t in range(n_tables)]).softmax(-1)
    n, seq = tokens.shape
    has_topic = tokens[:, 1] > N_NAMES
    topic = torch.where(has_topic, tokens[:, 1] - 1 - N_NAMES, n_tables - 1)
    out = torch.full((n, seq, N_NAMES), 1.0 / N_NAMES)
    present = torch.zeros(n, N_NAMES, dtype=torch.bool)
    for t in range(1, seq):
        cur = (tokens[:, t] - 1).clamp(max=N_NAMES - 1)
        skip = tokens[:, t] > N_NAMES                    # the topic word itself: next name uniform
        present[torch.arange(n), cur] |= ~skip
        free = (~present).float()
        w = (1 - task.label_noise) * tables[topic, cur] * free
        w = w / w.sum(-1, keepdim=True).clamp_min(1e-30)
        u = free / free.sum(-1, keepdim=True).clamp_min(1)
        out[:, t] = torch.where(skip[:, None], out[:, t], (1 - task.label_noise) * w + task.label_noise * u)
    return out
