"""Recipe: the 1-layer attention-only toy model with planted skip-trigrams (lessons 1-3).

Model
    TL-native ``TransformerBridge`` (``boot_native``): 1 layer, attention only, no
    LayerNorm, learned absolute positions, ``n_heads = 4``, ``d_model = 64``,
    ``d_head = 16``, ``n_ctx = 14``, ``d_vocab = 48``. Every bias is zero and frozen
    (:func:`mechinterp_edu.models.native.zero_and_freeze_biases`), so the model is
    exactly ``logits = (x + sum_h A^h x W_V^h W_O^h) W_U`` with ``x = W_E[t] + W_pos``.

Vocabulary (token ids in brackets; ``VOCAB[id]`` is the token's name)
    [0] ``<s>`` (BOS: every training sequence starts with it)
    fillers  [1-18]  the a it was and of we you they so but then very not just now here all
    A tokens [19-30] keep take make pay break hold give bring catch turn run set
    B tokens [31-34] in at on to
    C tokens [35-47] mind bay heart sense attention ice breath way light fire page risk sail
    The names are mnemonics; the "language" is synthetic. :func:`encode` accepts names
    or ids (``"<s> keep the in"`` or ``"0 19 1 31"``); prompts should start with ``<s>``
    (``encode(text, bos=True)`` adds it when missing), as in training.

The language (:func:`sample_batch`)
    Sequences of ``n_ctx + 1 = 15`` tokens: the model reads the first 14 and predicts each
    next token. Position 0 is ``<s>``. Background tokens are drawn from a noise
    distribution over every other token (fillers 70%, A 8%, B 10%, C 12% of the mass,
    uniform within each group). With probability 0.9 one planted skip-trigram is
    inserted: A at ``j``, B at ``i``, ``1 <= j < i <= 13``, (j, i) uniform over such pairs.
    Then the rule is enforced left to right (:func:`apply_rule`): *after a B token comes
    the C of the planted pair (A, B) whose A occurred earlier*; elsewhere the next token is
    noise. Rows where two earlier A tokens would demand different Cs are replaced by the
    same plant over a background of fillers only. Noise A and B tokens teach the model that
    B alone predicts nothing and that an A not paired with the current B must be ignored:
    attention has to follow the planted pairs (QK) and the prediction has to come from A (OV).

Planted set (:data:`PLANTED`, 24 skip-trigrams, 2 per A token)
    Eleven A tokens have one C each, reached through two different B tokens
    (``take ... to/in -> heart``). ``keep`` is the exception, after Elhage et al.'s
    example: ``keep ... in -> mind`` and ``keep ... at -> bay``. A head whose QK makes
    both ``in`` and ``at`` attend to ``keep`` and whose OV maps ``keep`` to both ``mind``
    and ``bay`` also raises ``keep ... in -> bay`` (:data:`BUG_TRIGRAMS`). In the shipped
    model that head is head 1 (``in`` and ``at`` both attend to ``keep``; its OV raises
    ``bay`` by ~12 logits after ``keep ... in``) and head 0 pays to cancel it: lesson 3
    shows this live.

Training (exact recipe: :data:`RECIPE`)
    seed 0 (torch and the data generator); AdamW (lr 3e-3, betas (0.9, 0.98), weight decay
    0.1 on the trainable weights; biases frozen at 0); batch 256 fresh sequences per step;
    2000 steps; linear warm-up over 100 steps then cosine decay to 10% of lr; loss =
    next-token cross-entropy at every position. The loop uses a functional forward over
    the bridge's own parameters (:func:`forward_fast`, checked against ``model(tokens)`` in
    the tests) because the hooked bridge forward is several times slower on a CPU; on a
    CPU it runs single-threaded: 80-120 s measured on a 2-core CPU shared with other jobs.

Metrics (:func:`evaluate`)
    ``accuracy``: on 4096 held-out sequences (seed 12345), the fraction of firing positions
    where the argmax prediction is the planted C (target >= 0.95); ``recovery``: fraction
    of the planted set among the top-24 skip-trigrams of
    :func:`mechinterp_edu.lessons.skip_trigrams.reference.top_skip_trigrams`, from the weights alone
    (target >= 0.9); ``bug_head`` / ``bug_lift``: the head whose output raises ``bay`` most
    after ``keep ... in`` (versus a filler in keep's place) and by how many logits;
    ``bug_prob`` / ``bug_baseline``: P(bay) after ``keep ... in`` and after ``<filler> ... in``.
"""
from __future__ import annotations

import math
import re
import time
from typing import Any, Iterable

import torch
import torch.nn.functional as F

from mechinterp_edu.device import get_device
from mechinterp_edu.models.native import boot_native_bridge, zero_and_freeze_biases
from mechinterp_edu.course import collector
from mechinterp_edu.models.zoo import ModelSpec, TrainResult

MODELS: list[ModelSpec] = []
register = collector(MODELS)

# --------------------------------------------------------------------------- vocabulary
BOS = "<s>"
FILLERS: tuple[str, ...] = ("the", "a", "it", "was", "and", "of", "we", "you", "they", "so",
                            "but", "then", "very", "not", "just", "now", "here", "all")
A_TOKENS: tuple[str, ...] = ("keep", "take", "make", "pay", "break", "hold", "give", "bring",
                             "catch", "turn", "run", "set")
B_TOKENS: tuple[str, ...] = ("in", "at", "on", "to")
C_TOKENS: tuple[str, ...] = ("mind", "bay", "heart", "sense", "attention", "ice", "breath", "way",
                             "light", "fire", "page", "risk", "sail")
VOCAB: tuple[str, ...] = (BOS,) + FILLERS + A_TOKENS + B_TOKENS + C_TOKENS
TOKEN_ID: dict[str, int] = {word: i for i, word in enumerate(VOCAB)}
BOS_ID = 0

# (A, B, C) by name. Each A except "keep" has a single C reached through two B tokens.
PLANTED_NAMES: tuple[tuple[str, str, str], ...] = (
    ("keep", "in", "mind"), ("keep", "at", "bay"),
    ("take", "to", "heart"), ("take", "in", "heart"),
    ("make", "on", "sense"), ("make", "to", "sense"),
    ("pay", "to", "attention"), ("pay", "at", "attention"),
    ("break", "on", "ice"), ("break", "in", "ice"),
    ("hold", "at", "breath"), ("hold", "on", "breath"),
    ("give", "to", "way"), ("give", "on", "way"),
    ("bring", "to", "light"), ("bring", "in", "light"),
    ("catch", "on", "fire"), ("catch", "at", "fire"),
    ("turn", "at", "page"), ("turn", "in", "page"),
    ("run", "at", "risk"), ("run", "in", "risk"),
    ("set", "on", "sail"), ("set", "to", "sail"),
)
PLANTED: tuple[tuple[int, int, int], ...] = tuple(
    (TOKEN_ID[a], TOKEN_ID[b], TOKEN_ID[c]) for a, b, c in PLANTED_NAMES)
# Never in the data; implied by the factored form for "keep" (see module docstring).
BUG_TRIGRAM_NAMES: tuple[tuple[str, str, str], ...] = (("keep", "in", "bay"), ("keep", "at", "mind"))
BUG_TRIGRAMS: tuple[tuple[int, int, int], ...] = tuple(
    (TOKEN_ID[a], TOKEN_ID[b], TOKEN_ID[c]) for a, b, c in BUG_TRIGRAM_NAMES)

CONFIG: dict[str, Any] = {
    "d_model": 64, "d_head": 16, "n_heads": 4, "n_layers": 1, "n_ctx": 14,
    "d_vocab": len(VOCAB), "d_vocab_out": len(VOCAB), "act_fn": None,
    "attn_only": True, "normalization_type": None, "positional_embedding_type": "standard",
    "default_prepend_bos": False,
}

RECIPE: dict[str, Any] = {
    "seed": 0, "steps": 2000, "batch_size": 256, "lr": 3e-3, "betas": (0.9, 0.98),
    "weight_decay": 0.1, "warmup_steps": 100, "final_lr_fraction": 0.1,
    "p_plant": 0.9, "noise_fillers": 0.7, "noise_a": 0.08, "noise_b": 0.1, "noise_c": 0.12,
    "eval_seed": 12345, "eval_sequences": 4096,
}

TARGETS = {"accuracy": 0.95, "recovery": 0.9}


# --------------------------------------------------------------------------- tokens
def encode(text: str | Iterable[int | str], bos: bool = False) -> list[int]:
    """Token names or ids -> ids: ``"keep the in"``, ``"19 1 31"``, ``"19,1,31"`` or a list.

    ``bos=True`` puts ``<s>`` (id 0) in front unless the sequence already starts with it.
    Raises ValueError naming the bad item and the valid range / names.
    """
    items = re.split(r"[\s,]+", text.strip()) if isinstance(text, str) else list(text)
    items = [x for x in items if not (isinstance(x, str) and x == "")]
    ids = []
    for item in items:
        word = str(item).strip().lower()
        if word in TOKEN_ID:
            ids.append(TOKEN_ID[word])
        elif re.fullmatch(r"-?\d+", word):
            value = int(word)
            if not 0 <= value < len(VOCAB):
                raise ValueError(f"token id {value} is out of range: the skip_trigrams model has ids 0..{len(VOCAB) - 1}.")
            ids.append(value)
        else:
            raise ValueError(f"unknown token {item!r}: use ids 0..{len(VOCAB) - 1} or names such as "
                             f"{', '.join(VOCAB[19:23])} (full list: mechinterp_edu.lessons.skip_trigrams.model.VOCAB).")
    if bos and (not ids or ids[0] != BOS_ID):
        ids.insert(0, BOS_ID)
    return ids


def decode(ids: Iterable[int]) -> list[str]:
    return [VOCAB[int(i)] for i in ids]


def trigram_names(triple: Iterable[int]) -> str:
    a, b, c = (VOCAB[int(x)] for x in triple)
    return f"{a} … {b} → {c}"


# --------------------------------------------------------------------------- data
def _ids(words: Iterable[str]) -> torch.Tensor:
    return torch.tensor([TOKEN_ID[w] for w in words])


_FILLER_IDS, _A_IDS, _B_IDS, _C_IDS = _ids(FILLERS), _ids(A_TOKENS), _ids(B_TOKENS), _ids(C_TOKENS)
_PLANTED_T = torch.tensor(PLANTED)                       # [n_planted, 3]


def _pair_table() -> torch.Tensor:
    """[d_vocab(A), d_vocab(B)] -> C id of the planted pair, -1 where none."""
    table = torch.full((len(VOCAB), len(VOCAB)), -1, dtype=torch.long)
    for a, b, c in PLANTED:
        table[a, b] = c
    return table


_PAIR_C = _pair_table()


def noise_distribution(recipe: dict[str, Any] | None = None) -> torch.Tensor:
    """[d_vocab] probabilities of a background token (never BOS)."""
    r = dict(RECIPE, **(recipe or {}))
    probs = torch.zeros(len(VOCAB))
    for ids, mass in ((_FILLER_IDS, r["noise_fillers"]), (_A_IDS, r["noise_a"]),
                      (_B_IDS, r["noise_b"]), (_C_IDS, r["noise_c"])):
        probs[ids] = mass / len(ids)
    return probs / probs.sum()


def apply_rule(tokens: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor, torch.Tensor]:
    """Enforce the language's rule left to right, in place on a copy.

    At each position k <= L-2 holding a B token, the planted pairs (A, B) whose A occurs
    at some j < k decide the next token: exactly one C among them -> ``t[k+1] = C``.
    Returns ``(tokens, fires [batch, L-1] bool, conflict [batch] bool)``: fires[b, k]
    marks positions whose next token was forced; conflict marks rows where two earlier
    A tokens demanded different C tokens (such rows are not valid data).
    """
    tokens = tokens.clone()
    b, L = tokens.shape
    seen = torch.zeros(b, len(VOCAB), dtype=torch.bool)       # A tokens seen so far
    fires = torch.zeros(b, L - 1, dtype=torch.bool)
    conflict = torch.zeros(b, dtype=torch.bool)
    rows = torch.arange(b)
    for k in range(L - 1):
        cand = _PAIR_C[:, tokens[:, k]].T                        # [b, vocab(A)] C of (A, t_k)
        cand = torch.where(seen, cand, torch.full_like(cand, -1))
        hi = cand.max(1).values
        lo = torch.where(cand >= 0, cand, torch.full_like(cand, 10 ** 6)).min(1).values
        fire = hi >= 0
        conflict |= fire & (hi != lo)
        fires[:, k] = fire
        nxt = tokens[:, k + 1].clone()
        nxt[fire] = hi[fire]
        seen[rows, tokens[:, k]] = True
        tokens[:, k + 1] = nxt
    return tokens, fires, conflict


def sample_batch(batch: int, generator: torch.Generator, n_ctx: int = CONFIG["n_ctx"],
                 recipe: dict[str, Any] | None = None) -> dict[str, torch.Tensor]:
    """``batch`` sequences of ``n_ctx + 1`` tokens from the synthetic language (on CPU).

    Returns ``tokens [batch, n_ctx + 1]`` (``tokens[:, 0]`` is BOS) and ``fires
    [batch, n_ctx]``: the positions i whose next token ``tokens[:, i + 1]`` is the C of a
    planted skip-trigram.
    """
    r = dict(RECIPE, **(recipe or {}))
    L = n_ctx + 1
    g = generator
    rows = torch.arange(batch)
    noise = torch.multinomial(noise_distribution(r), batch * L, replacement=True, generator=g).view(batch, L)
    fillers = _FILLER_IDS[torch.randint(len(FILLERS), (batch, L), generator=g)]
    # one planted (A, B): A at j, B at i, 1 <= j < i <= L-2
    pairs = torch.tensor([(j, i) for i in range(2, L - 1) for j in range(1, i)])
    j, i = pairs[torch.randint(len(pairs), (batch,), generator=g)].unbind(1)
    tri = _PLANTED_T[torch.randint(len(PLANTED), (batch,), generator=g)]
    has = torch.rand(batch, generator=g) < r["p_plant"]
    out = []
    for background in (noise, fillers):
        t = background.clone()
        t[:, 0] = BOS_ID
        t[rows[has], j[has]] = tri[has, 0]
        t[rows[has], i[has]] = tri[has, 1]
        out.append(apply_rule(t))
    (t_noise, f_noise, bad), (t_fill, f_fill, _) = out
    tokens = torch.where(bad.unsqueeze(1), t_fill, t_noise)
    fires = torch.where(bad.unsqueeze(1), f_fill, f_noise)
    return {"tokens": tokens, "fires": fires}


# --------------------------------------------------------------------------- model
def build(config: dict[str, Any] | None = None):
    """A randomly initialised bridge of this architecture, biases zero and frozen."""
    model = boot_native_bridge(dict(config or CONFIG))
    return zero_and_freeze_biases(model)


def _params(model) -> dict[str, torch.Tensor]:
    sd = model.state_dict(keep_vars=True)
    return {
        "E": sd["embed.weight"], "P": sd["pos_embed.weight"],
        "Q": sd["blocks.0.attn.q.weight"], "K": sd["blocks.0.attn.k.weight"],
        "V": sd["blocks.0.attn.v.weight"], "O": sd["blocks.0.attn.o.weight"],
        "U": sd["unembed.weight"],
    }


def forward_fast(model, tokens: torch.Tensor) -> torch.Tensor:
    """Logits [batch, pos, d_vocab] computed directly from the bridge's parameters.

    Equal to ``model(tokens)`` for this architecture with zero biases (a test checks
    it); differentiable, so training updates the bridge's own parameters.
    """
    p = _params(model)
    n_heads, d_head = model.cfg.n_heads, model.cfg.d_head
    b, n = tokens.shape
    x = p["E"][tokens] + p["P"][:n]
    split = lambda y: y.view(b, n, n_heads, d_head).transpose(1, 2)        # noqa: E731
    q, k, v = split(x @ p["Q"].T), split(x @ p["K"].T), split(x @ p["V"].T)
    scores = q @ k.transpose(-1, -2) / math.sqrt(d_head)
    causal = torch.ones(n, n, dtype=torch.bool, device=tokens.device).tril()
    pattern = scores.masked_fill(~causal, float("-inf")).softmax(-1)
    z = (pattern @ v).transpose(1, 2).reshape(b, n, n_heads * d_head)
    return (x + z @ p["O"].T) @ p["U"].T


def biases_are_zero(model) -> bool:
    return all(bool((v == 0).all()) for k, v in model.state_dict().items() if k.endswith("bias"))


def _lr_factor(step: int, steps: int, r: dict[str, Any]) -> float:
    if step < r["warmup_steps"]:
        return (step + 1) / r["warmup_steps"]
    progress = (step - r["warmup_steps"]) / max(1, steps - r["warmup_steps"])
    floor = r["final_lr_fraction"]
    return floor + (1 - floor) * 0.5 * (1 + math.cos(math.pi * min(1.0, progress)))


def _train_loop(model, opt, sched, gen, bar, r, device) -> None:
    for _ in bar:
        tokens = sample_batch(r["batch_size"], gen, recipe=r)["tokens"].to(device)
        logits = forward_fast(model, tokens[:, :-1])
        loss = F.cross_entropy(logits.reshape(-1, logits.shape[-1]), tokens[:, 1:].reshape(-1))
        opt.zero_grad(set_to_none=True)
        loss.backward()
        opt.step()
        sched.step()
        bar.set_postfix(loss=f"{loss.item():.3f}", refresh=False)


def train(steps: int | None = None, device: torch.device | str | None = None,
          progress: bool = True, seed: int | None = None, evaluate_result: bool = True) -> TrainResult:
    """Train from scratch with :data:`RECIPE` (``steps`` overrides the number of steps)."""
    r = dict(RECIPE)
    if steps is not None:
        if int(steps) < 1:
            raise ValueError(f"steps must be at least 1, got {steps}.")
        r["steps"] = int(steps)
        r["warmup_steps"] = min(r["warmup_steps"], max(1, r["steps"] // 10))
    if seed is not None:
        r["seed"] = int(seed)
    device = torch.device(device) if device is not None else get_device()
    torch.manual_seed(r["seed"])
    model = build(CONFIG).to(device)
    model.train()
    gen = torch.Generator().manual_seed(r["seed"])
    weights = [p for n, p in model.named_parameters() if p.requires_grad]
    opt = torch.optim.AdamW(weights, lr=r["lr"], betas=tuple(r["betas"]), weight_decay=r["weight_decay"])
    sched = torch.optim.lr_scheduler.LambdaLR(opt, lambda s: _lr_factor(s, r["steps"], r))
    from tqdm.auto import tqdm

    bar = tqdm(range(r["steps"]), desc="skip_trigrams", disable=not progress, mininterval=0.5)
    start = time.perf_counter()
    # Tiny matrices: one CPU thread is fastest (and fair to other processes); restored below.
    threads = torch.get_num_threads()
    if device.type == "cpu":
        torch.set_num_threads(1)
    try:
        _train_loop(model, opt, sched, gen, bar, r, device)
    finally:
        torch.set_num_threads(threads)
    r["train_seconds"] = round(time.perf_counter() - start, 1)
    r["device"] = str(device)
    model.eval()
    assert biases_are_zero(model), "biases moved during training"
    metrics = evaluate(model) if evaluate_result else {}
    r["betas"] = list(r["betas"])
    return TrainResult(model=model, metrics=metrics, recipe=r)


# --------------------------------------------------------------------------- evaluation
def eval_batch(n: int | None = None) -> dict[str, torch.Tensor]:
    """The fixed held-out set (seed RECIPE['eval_seed'])."""
    gen = torch.Generator().manual_seed(RECIPE["eval_seed"])
    return sample_batch(n or RECIPE["eval_sequences"], gen)


@torch.no_grad()
def planted_accuracy(model, data: dict[str, torch.Tensor] | None = None) -> float:
    """Fraction of firing positions where the argmax prediction is the planted C."""
    data = data or eval_batch()
    device = next(model.parameters()).device
    logits = model(data["tokens"][:, :-1].to(device)).cpu()
    fires = data["fires"]
    pred = logits.argmax(-1)
    return float((pred[fires] == data["tokens"][:, 1:][fires]).float().mean())


def bug_contexts(n: int = 512, seed: int = 7, a: str = "keep", b: str = "in") -> tuple[torch.Tensor, torch.Tensor]:
    """(with_a, control) [n, n_ctx]: BOS, fillers, ``a`` at a random position 1..n_ctx-2 (control:
    a filler there), ``b`` at the last position."""
    gen = torch.Generator().manual_seed(seed)
    n_ctx = CONFIG["n_ctx"]
    tokens = _FILLER_IDS[torch.randint(len(FILLERS), (n, n_ctx), generator=gen)]
    tokens[:, 0] = BOS_ID
    j = torch.randint(1, n_ctx - 1, (n,), generator=gen)
    tokens[:, -1] = TOKEN_ID[b]
    with_a = tokens.clone()
    with_a[torch.arange(n), j] = TOKEN_ID[a]
    return with_a, tokens


@torch.no_grad()
def bug_probabilities(model, n: int = 512, seed: int = 7) -> dict[str, float]:
    """Mean P(bay) and P(mind) after ``keep ... in`` and after ``<filler> ... in``."""
    with_keep, control = bug_contexts(n, seed)
    device = next(model.parameters()).device
    out = {}
    for label, toks in (("keep", with_keep), ("control", control)):
        probs = model(toks.to(device))[:, -1].softmax(-1).cpu()
        out[f"p_bay_{label}"] = float(probs[:, TOKEN_ID["bay"]].mean())
        out[f"p_mind_{label}"] = float(probs[:, TOKEN_ID["mind"]].mean())
    return out


def model_weights(model) -> dict[str, torch.Tensor]:
    from mechinterp_edu.weights import layer_weights
    return layer_weights(model, 0, dtype=torch.float32, device="cpu")


def recovered(model, k: int | None = None) -> list[tuple[int, int, int]]:
    from mechinterp_edu.lessons.skip_trigrams.reference import top_skip_trigrams
    w = model_weights(model)
    return top_skip_trigrams(w["W_E"], w["W_pos"], w["W_Q"], w["W_K"], w["W_V"], w["W_O"], w["W_U"],
                             len(PLANTED) if k is None else k)


@torch.no_grad()
def head_lifts(model, a: str = "keep", b: str = "in", n: int = 256, seed: int = 3) -> torch.Tensor:
    """[n_heads, d_vocab]: how much each head's direct output raises each logit at ``a ... b``
    compared with ``<filler> ... b`` (mean over ``n`` random filler contexts)."""
    with_a, control = bug_contexts(n, seed, a, b)
    w = model_weights(model)
    device = next(model.parameters()).device
    out = []
    for toks in (with_a, control):
        _, cache = model.run_with_cache(toks.to(device), names_filter=lambda name: name.endswith("hook_z"))
        z = cache["blocks.0.attn.hook_z"][:, -1].float().cpu()                  # [n, head, d_head]
        out.append(torch.einsum("nhd,hdm,mv->hv", z, w["W_O"], w["W_U"]) / len(toks))
    return out[0] - out[1]


def evaluate(model) -> dict[str, float]:
    from mechinterp_edu.lessons.skip_trigrams.reference import recovery_rate
    bug = bug_probabilities(model)
    lifts = head_lifts(model)[:, TOKEN_ID["bay"]]
    return {
        "accuracy": planted_accuracy(model),
        "recovery": recovery_rate(recovered(model), PLANTED),
        "bug_head": float(lifts.argmax()),
        "bug_lift": float(lifts.max()),
        "bug_prob": bug["p_bay_keep"],
        "bug_baseline": bug["p_bay_control"],
    }


SPEC = register(ModelSpec(
    name="skip_trigrams",
    description="1-layer attention-only, 4 heads, 24 planted skip-trigrams",
    lessons=(1, 2, 3),
    config=CONFIG,
    build=build,
    train=train,
    evaluate=evaluate,
    headline_metric="accuracy",
    extra={"vocab": VOCAB, "encode": encode, "planted": PLANTED, "bug_trigrams": BUG_TRIGRAMS, "targets": TARGETS},
))
