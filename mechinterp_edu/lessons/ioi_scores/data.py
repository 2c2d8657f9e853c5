"""Synthetic indirect-object-identification (IOI) prompts, with the position of every word.

An IOI prompt names two people, repeats one of them (the *subject*, S) and ends where the
other one (the *indirect object*, IO) is the natural next word::

    When Mary and John went to the store , John gave a drink to   -> Mary
         IO       S1                       S2                 END

Wang et al. (2022) call the order above ABBA (IO first, then S, S, ...); BABA puts the
subject first (``When John and Mary ..., John gave a drink to``). The four positions the
lesson needs are ``IO``, ``S1`` (first mention of the subject), ``S2`` (second mention)
and ``END`` (the last word, whose next-token prediction should be IO).

Everything is deterministic given a seed. The same generator feeds the toy model's
training (``mechinterp_edu.lessons.ioi_scores.model``), its evaluation on held-out name pairs, fillers
and a held-out template, and the lesson.

Word-level tokens: the toy model reads one token per word (``WordVocab``), with ``<bos>``
at position 0, so word positions are token positions. For a subword tokenizer (GPT-2),
:func:`encode_with_tokenizer` tokenizes word by word and returns where each word's first
token lies.
"""
from __future__ import annotations

import random
from dataclasses import dataclass, field
from typing import Callable, Sequence

import torch

BOS = "<bos>"

# 60 first names; every one is a single GPT-2 token when written with a leading space.
NAMES: tuple[str, ...] = (
    "Mary", "John", "Alice", "Bob", "Tom", "James", "Sarah", "David", "Michael", "Anna",
    "Paul", "Laura", "Mark", "Emma", "Peter", "Lisa", "Daniel", "Kate", "Steven", "Rachel",
    "Adam", "Helen", "Brian", "Amy", "Chris", "Linda", "Kevin", "Jessica", "Eric", "Karen",
    "Jason", "Susan", "Ryan", "Nancy", "Justin", "Emily", "Scott", "Jennifer", "Frank", "Grace",
    "Tim", "Rose", "Jack", "Anne", "George", "Victoria", "Charles", "Sophie", "Henry", "Julia",
    "Richard", "Maria", "Edward", "Kelly", "Andrew", "Claire", "Thomas", "Diana", "Matthew", "Martha",
)
PLACES: tuple[str, ...] = (
    "store", "school", "park", "garden", "office", "station", "restaurant", "hospital",
    "library", "house", "market", "beach", "museum", "river", "cafe",
)
OBJECTS: tuple[str, ...] = (
    "drink", "book", "ring", "bone", "kiss", "necklace", "basketball", "computer",
    "snack", "bag", "apple", "letter", "key", "hat", "ball",
)
# Fillers the toy model never reads during training (the last few of each list).
HELDOUT_PLACES: tuple[str, ...] = PLACES[-4:]
HELDOUT_OBJECTS: tuple[str, ...] = OBJECTS[-4:]

# Templates: every one has exactly 14 words (15 tokens with <bos>), so batches need no padding.
# {A} and {B} are the first two names (ABBA: A = IO; BABA: A = S), {S} the repeated subject.
TRAIN_TEMPLATES: tuple[str, ...] = (
    "When {A} and {B} went to the {PLACE} , {S} gave a {OBJECT} to",
    "After {A} and {B} arrived at the {PLACE} , {S} handed a {OBJECT} to",
    "Then {A} and {B} were at the {PLACE} . {S} gave the {OBJECT} to",
    "While {A} and {B} sat in the {PLACE} , {S} threw a {OBJECT} to",
    "{A} and {B} went to the {PLACE} . Then {S} gave a {OBJECT} to",
    "At the {PLACE} , {A} and {B} talked . {S} gave a {OBJECT} to",
    "{A} and {B} really liked the {PLACE} , so {S} brought a {OBJECT} to",
)
# Never seen in training: a new word order, and the word "then" appears in no training template.
HELDOUT_TEMPLATE: str = "{A} and {B} were at the {PLACE} , then {S} handed a {OBJECT} to"
TEMPLATES: tuple[str, ...] = TRAIN_TEMPLATES + (HELDOUT_TEMPLATE,)
N_WORDS = 14
SEQ_LEN = N_WORDS + 1  # with <bos>

SPLITS = ("train", "test", "heldout_template")


def _template_words() -> list[str]:
    words: set[str] = set()
    for template in TEMPLATES:
        for word in template.split():
            if not word.startswith("{"):
                words.add(word)
    return sorted(words)


def build_vocab() -> list[str]:
    """The toy model's word list, in a fixed order: <bos>, template words, names, places, objects."""
    vocab = [BOS] + _template_words() + list(NAMES) + list(PLACES) + list(OBJECTS)
    assert len(set(vocab)) == len(vocab), "a word appears in two word lists"
    return vocab


class WordVocab:
    """A deterministic word-level tokenizer: one token per whitespace-separated word."""

    def __init__(self, words: Sequence[str]):
        self.words = list(words)
        self.index = {w: i for i, w in enumerate(self.words)}
        if len(self.index) != len(self.words):
            raise ValueError("the vocabulary lists a word twice")

    def __len__(self) -> int:
        return len(self.words)

    @property
    def bos_id(self) -> int:
        return self.index[BOS]

    def encode(self, text: str | Sequence[str], prepend_bos: bool = True) -> list[int]:
        words = text.split() if isinstance(text, str) else list(text)
        unknown = [w for w in words if w not in self.index]
        if unknown:
            raise ValueError(f"unknown word(s) {unknown[:5]} for the IOI toy's vocabulary; "
                             f"it knows {len(self.words)} words (names, places, objects, template words).")
        ids = [self.index[w] for w in words]
        return [self.bos_id] + ids if prepend_bos else ids

    def decode(self, ids: Sequence[int]) -> list[str]:
        return [self.words[int(i)] for i in ids]

    def __call__(self, word: str) -> int:
        return self.index[word]


@dataclass
class IOIPrompt:
    words: list[str]          # without <bos>
    io: str
    s: str
    template: int             # index into TEMPLATES
    order: str                # "ABBA" (IO first) or "BABA" (S first)
    positions: dict[str, int] # word positions counted with <bos> at 0: IO, S1, S2, END

    @property
    def text(self) -> str:
        return " ".join(self.words)


@dataclass
class IOIBatch:
    """A batch of prompts, tokenized. ``positions[name]`` is a LongTensor [batch]."""

    prompts: list[IOIPrompt]
    tokens: torch.Tensor                  # [batch, seq] (int64)
    io_tokens: torch.Tensor               # [batch]
    s_tokens: torch.Tensor                # [batch]
    positions: dict[str, torch.Tensor] = field(default_factory=dict)

    def __len__(self) -> int:
        return len(self.prompts)

    def to(self, device) -> "IOIBatch":
        return IOIBatch(self.prompts, self.tokens.to(device), self.io_tokens.to(device),
                        self.s_tokens.to(device), {k: v.to(device) for k, v in self.positions.items()})


def name_pair_split(seed: int = 0, test_fraction: float = 0.2) -> tuple[list[tuple[str, str]], list[tuple[str, str]]]:
    """Split the unordered name pairs into (train, test), deterministically."""
    pairs = [(a, b) for i, a in enumerate(NAMES) for b in NAMES[i + 1:]]
    rng = random.Random(seed)
    rng.shuffle(pairs)
    n_test = int(round(len(pairs) * test_fraction))
    return sorted(pairs[n_test:]), sorted(pairs[:n_test])


def make_prompt(template_index: int, io: str, s: str, order: str, place: str, obj: str) -> IOIPrompt:
    """One prompt, with the word positions of IO, S1, S2 and END (<bos> counts as position 0)."""
    if io == s:
        raise ValueError("IO and S must be different names")
    if order not in ("ABBA", "BABA"):
        raise ValueError(f"order must be 'ABBA' or 'BABA', not {order!r}")
    a, b = (io, s) if order == "ABBA" else (s, io)
    template = TEMPLATES[template_index]
    words: list[str] = []
    positions: dict[str, int] = {}
    for slot in template.split():
        pos = len(words) + 1  # +1 for <bos>
        if slot == "{A}":
            words.append(a)
            positions["IO" if order == "ABBA" else "S1"] = pos
        elif slot == "{B}":
            words.append(b)
            positions["S1" if order == "ABBA" else "IO"] = pos
        elif slot == "{S}":
            words.append(s)
            positions["S2"] = pos
        elif slot == "{PLACE}":
            words.append(place)
        elif slot == "{OBJECT}":
            words.append(obj)
        else:
            words.append(slot)
    positions["END"] = len(words)
    return IOIPrompt(words, io, s, template_index, order, positions)


def sample_prompts(n: int, split: str = "train", seed: int = 0) -> list[IOIPrompt]:
    """``n`` prompts from a split, half ABBA and half BABA (alternating), reproducibly.

    * ``train``: training templates, training name pairs, training fillers;
    * ``test``: training templates, *held-out* name pairs and *held-out* fillers;
    * ``heldout_template``: the held-out template, held-out pairs and fillers.
    """
    if split not in SPLITS:
        raise ValueError(f"split must be one of {SPLITS}, not {split!r}")
    if n < 1:
        raise ValueError(f"ask for at least one prompt (got n={n})")
    train_pairs, test_pairs = name_pair_split()
    rng = random.Random(f"{split}-{seed}")
    if split == "train":
        pairs, templates = train_pairs, range(len(TRAIN_TEMPLATES))
        places = [p for p in PLACES if p not in HELDOUT_PLACES]
        objects = [o for o in OBJECTS if o not in HELDOUT_OBJECTS]
    else:
        pairs, places, objects = test_pairs, list(HELDOUT_PLACES), list(HELDOUT_OBJECTS)
        templates = range(len(TRAIN_TEMPLATES)) if split == "test" else [len(TRAIN_TEMPLATES)]
    templates = list(templates)
    prompts = []
    for i in range(n):
        pair = rng.choice(pairs)
        io, s = pair if rng.random() < 0.5 else pair[::-1]
        order = "ABBA" if i % 2 == 0 else "BABA"
        prompts.append(make_prompt(rng.choice(templates), io, s, order,
                                   rng.choice(places), rng.choice(objects)))
    return prompts


def encode_prompts(prompts: Sequence[IOIPrompt], vocab: WordVocab) -> IOIBatch:
    """Tokenize with the toy's word vocabulary (one token per word, <bos> first)."""
    tokens = torch.tensor([vocab.encode(p.words) for p in prompts], dtype=torch.long)
    return IOIBatch(
        list(prompts), tokens,
        torch.tensor([vocab(p.io) for p in prompts], dtype=torch.long),
        torch.tensor([vocab(p.s) for p in prompts], dtype=torch.long),
        {k: torch.tensor([p.positions[k] for p in prompts], dtype=torch.long)
         for k in ("IO", "S1", "S2", "END")},
    )


def encode_with_tokenizer(prompts: Sequence[IOIPrompt], encode_word: Callable[[str], list[int]],
                          bos_id: int) -> IOIBatch:
    """Tokenize word by word with a subword tokenizer (e.g. GPT-2's).

    ``encode_word(" Mary")`` must return the token ids of one word written with its leading
    space. A word's position is the position of its first token; IO and S are identified by
    the first token of " Name". Prompts of different token lengths are right-padded with
    ``bos_id`` (positions before END are all the model reads at END, so padding is harmless).
    """
    rows, io_ids, s_ids = [], [], []
    positions = {k: [] for k in ("IO", "S1", "S2", "END")}
    for p in prompts:
        ids = [bos_id]
        starts = []
        for w in p.words:
            starts.append(len(ids))
            ids.extend(encode_word(w if w in ",." else " " + w))
        rows.append(ids)
        word_at = {pos: starts[pos - 1] for pos in range(1, len(p.words) + 1)}
        for key in ("IO", "S1", "S2"):
            positions[key].append(word_at[p.positions[key]])
        positions["END"].append(len(ids) - 1)  # the last token of the last word
        io_ids.append(encode_word(" " + p.io)[0])
        s_ids.append(encode_word(" " + p.s)[0])
    width = max(len(r) for r in rows)
    tokens = torch.tensor([r + [bos_id] * (width - len(r)) for r in rows], dtype=torch.long)
    return IOIBatch(list(prompts), tokens, torch.tensor(io_ids), torch.tensor(s_ids),
                    {k: torch.tensor(v, dtype=torch.long) for k, v in positions.items()})


def prompt_table(batch: IOIBatch, limit: int = 8) -> list[dict[str, object]]:
    """Rows for display: the prompt with its IO/S1/S2/END positions and the answer."""
    rows = []
    for p in batch.prompts[:limit]:
        rows.append({"prompt": p.text, "order": p.order, "template": p.template,
                     "IO": f"{p.io} @{p.positions['IO']}", "S1": f"{p.s} @{p.positions['S1']}",
                     "S2": f"{p.s} @{p.positions['S2']}", "END": f"{p.words[-1]} @{p.positions['END']}",
                     "answer": p.io})
    return rows
