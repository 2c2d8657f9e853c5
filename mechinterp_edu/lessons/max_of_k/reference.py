"""Lesson 4 reference: the circuits of a one-layer, one-head, attention-only max-of-K model.

Notation (row vectors, ``x @ W``; the single head's matrices without a head axis)::

    W_E [d_vocab, d_model]   W_pos [n_ctx, d_model]   W_U [d_model, d_vocab]
    W_Q, W_K, W_V [d_model, d_head]                   W_O [d_head, d_model]

    P_avg = mean_i W_pos[i]                 [d_model]      (mean + diff split)
    P_hat = W_pos - P_avg                   [n_ctx, d_model]
    E_bar = W_E + P_avg                     [d_vocab, d_model]  (keys / values, any position)
    E_q   = W_E + W_pos[-1]                 [d_vocab, d_model]  (the query sits at the last position)

    EQKE = E_q W_Q W_K^T E_bar^T / sqrt(d_head)   [d_vocab (query), d_vocab (key)]
    EQKP = E_q W_Q W_K^T P_hat^T / sqrt(d_head)   [d_vocab (query), n_ctx (key position)]
    EU   = E_q W_U                                [d_vocab (query), d_vocab (output)]
    EVOU = E_bar W_V W_O W_U                      [d_vocab (key), d_vocab (output)]
    PVOU = P_hat W_V W_O W_U                      [n_ctx (key position), d_vocab (output)]

    logits(x) = EU[x_q] + sum_i softmax_i(EQKE[x_q, x_i] + EQKP[x_q, i]) (EVOU[x_i] + PVOU[i])

with ``x_q = x[-1]``; this is exact for a model whose biases are zero.

This module is written for speed and batching; ``solutions/04_max_of_k.py`` is the
step-by-step second implementation. It also holds the brute-force evaluation over all
``d_vocab ** n_ctx`` inputs (the bug lab is in ``bug_lab.py``, the speed figures in ``bench.py``).
"""
from __future__ import annotations

import math
import time
from dataclasses import dataclass, field
from typing import Optional, Sequence

import torch
from jaxtyping import Float
from torch import Tensor

# Weight shapes (TransformerLens, row vectors)
WE = Float[Tensor, "d_vocab d_model"]
WPos = Float[Tensor, "n_ctx d_model"]
WQK = Float[Tensor, "d_model d_head"]
WO = Float[Tensor, "d_head d_model"]
WU = Float[Tensor, "d_model d_vocab"]

Tensor = torch.Tensor


# --------------------------------------------------------------------------- circuits
def mean_diff_positions(W_pos: WPos) -> tuple[Tensor, Tensor]:
    """W_pos [n_ctx, d_model] -> (P_avg [d_model], P_hat [n_ctx, d_model]), W_pos = P_avg + P_hat."""
    P_avg = W_pos.mean(dim=0)
    return P_avg, W_pos - P_avg


def _query_embed(W_E: WE, W_pos: WPos) -> Tensor:
    """E_q = W_E + W_pos[-1]: every token as it looks at the last (query) position."""
    return W_E + W_pos[-1]


def _key_embed(W_E: WE, W_pos: WPos) -> Tensor:
    """E_bar = W_E + P_avg."""
    return W_E + W_pos.mean(dim=0)


def eqke(W_E: WE, W_pos: WPos, W_Q: WQK, W_K: WQK) -> Tensor:
    """Token part of the last position's scores: [d_vocab (query), d_vocab (key)]."""
    q = _query_embed(W_E, W_pos) @ W_Q            # [d_vocab, d_head]
    k = _key_embed(W_E, W_pos) @ W_K              # [d_vocab, d_head]
    return torch.einsum("qh,kh->qk", q, k) / math.sqrt(W_Q.shape[-1])


def eqkp(W_E: WE, W_pos: WPos, W_Q: WQK, W_K: WQK) -> Tensor:
    """Position part of the last position's scores: [d_vocab (query), n_ctx (key position)]."""
    _, P_hat = mean_diff_positions(W_pos)
    q = _query_embed(W_E, W_pos) @ W_Q
    k = P_hat @ W_K                               # [n_ctx, d_head]
    return torch.einsum("qh,ph->qp", q, k) / math.sqrt(W_Q.shape[-1])


def eu(W_E: WE, W_pos: WPos, W_U: WU) -> Tensor:
    """Direct path from the query token to the logits: [d_vocab (query), d_vocab (output)]."""
    return _query_embed(W_E, W_pos) @ W_U


def evou(W_E: WE, W_pos: WPos, W_V: WQK, W_O: WO, W_U: WU) -> Tensor:
    """Token part of the OV circuit: [d_vocab (attended token), d_vocab (output)]."""
    return _key_embed(W_E, W_pos) @ (W_V @ W_O @ W_U)


def pvou(W_pos: WPos, W_V: WQK, W_O: WO, W_U: WU) -> Tensor:
    """Position part of the OV circuit: [n_ctx (attended position), d_vocab (output)]."""
    _, P_hat = mean_diff_positions(W_pos)
    return P_hat @ (W_V @ W_O @ W_U)


@dataclass
class Circuits:
    """The five tables a max-of-K model is read from (all for the last position)."""

    EQKE: Tensor   # [d_vocab, d_vocab]
    EQKP: Tensor   # [d_vocab, n_ctx]
    EU: Tensor     # [d_vocab, d_vocab]
    EVOU: Tensor   # [d_vocab, d_vocab]
    PVOU: Tensor   # [n_ctx, d_vocab]

    @property
    def d_vocab(self) -> int:
        return self.EQKE.shape[0]

    @property
    def n_ctx(self) -> int:
        return self.EQKP.shape[1]

    def as_tuple(self) -> tuple[Tensor, Tensor, Tensor, Tensor, Tensor]:
        return self.EQKE, self.EQKP, self.EU, self.EVOU, self.PVOU

    def to(self, *args, **kwargs) -> "Circuits":
        return Circuits(*(t.to(*args, **kwargs) for t in self.as_tuple()))


NAMES = ("EQKE", "EQKP", "EU", "EVOU", "PVOU")


def circuits(W_E: WE, W_pos: WPos, W_Q: WQK, W_K: WQK, W_V: WQK, W_O: WO, W_U: WU) -> Circuits:
    return Circuits(eqke(W_E, W_pos, W_Q, W_K), eqkp(W_E, W_pos, W_Q, W_K),
                    eu(W_E, W_pos, W_U), evou(W_E, W_pos, W_V, W_O, W_U), pvou(W_pos, W_V, W_O, W_U))


WEIGHT_NAMES = ("W_E", "W_pos", "W_Q", "W_K", "W_V", "W_O", "W_U")


def head_weights(model, dtype: Optional[torch.dtype] = torch.float64,
                 device: torch.device | str | None = None) -> dict[str, Tensor]:
    """The seven matrices of a one-layer, one-head bridge, head axis removed.

    Refuses models whose biases are not zero: the circuit formulas above have no bias terms.
    """
    from mechinterp_edu.weights import layer_weights

    w = layer_weights(model, 0, dtype=dtype, device=device)
    if w["W_Q"].shape[0] != 1:
        raise ValueError(f"Lesson 4's circuits are for a one-head model; this one has {w['W_Q'].shape[0]} heads.")
    for name in ("b_Q", "b_K", "b_V", "b_O", "b_U"):
        if w[name].abs().max().item() != 0.0:
            raise ValueError(f"{name} is not zero; the circuit formulas assume a model without biases.")
    out = {"W_E": w["W_E"], "W_pos": w["W_pos"], "W_U": w["W_U"]}
    for name in ("W_Q", "W_K", "W_V", "W_O"):
        out[name] = w[name][0]
    return out


def circuits_of(model, dtype: torch.dtype = torch.float64,
                device: torch.device | str | None = None) -> Circuits:
    w = head_weights(model, dtype=dtype, device=device)
    return circuits(*(w[k] for k in WEIGHT_NAMES))


# --------------------------------------------------------------------------- logits
def logits_from_circuits(tokens: Tensor, W_E: WE, W_pos: WPos, W_Q: WQK, W_K: WQK, W_V: WQK, W_O: WO, W_U: WU) -> Tensor:
    """tokens [batch, n_ctx] -> last-position logits [batch, d_vocab], from the five tables."""
    return logits_from_tables(tokens, circuits(W_E, W_pos, W_Q, W_K, W_V, W_O, W_U))


def scores_from_tables(tokens: Tensor, c: Circuits) -> Tensor:
    """Pre-softmax scores of the last position: tokens [batch, n] -> [batch, n] (n <= n_ctx)."""
    n = tokens.shape[-1]
    x_q = tokens[:, -1]
    return c.EQKE[x_q[:, None], tokens] + c.EQKP[x_q][:, :n]


def logits_from_tables(tokens: Tensor, c: Circuits) -> Tensor:
    n = tokens.shape[-1]
    if n != c.n_ctx:
        raise ValueError(f"tokens have {n} positions but the model's context is {c.n_ctx}; "
                         "the mean+diff split is over all n_ctx positions, so pass full-length sequences.")
    pattern = scores_from_tables(tokens, c).softmax(dim=-1)           # [batch, n]
    values = c.EVOU[tokens] + c.PVOU                                 # [batch, n, d_vocab]
    return c.EU[tokens[:, -1]] + torch.einsum("bi,biv->bv", pattern, values)


# --------------------------------------------------------------------------- model side
def model_last_scores(model, tokens: Tensor) -> Tensor:
    """The model's own pre-softmax scores at the last position, from hook_q and hook_k: [batch, n_ctx].

    (On boot_native bridges ``hook_attn_scores`` holds the softmax pattern, not the scores.)
    """
    names = ("blocks.0.attn.hook_q", "blocks.0.attn.hook_k")
    with torch.inference_mode():
        _, cache = model.run_with_cache(tokens, names_filter=lambda n: n in names)
    q = cache[names[0]][:, -1, 0]                   # [batch, d_head]
    k = cache[names[1]][:, :, 0]                    # [batch, n_ctx, d_head]
    return torch.einsum("bh,bph->bp", q, k) / math.sqrt(q.shape[-1])


def model_last_logits(model, tokens: Tensor) -> Tensor:
    with torch.inference_mode():
        return model(tokens)[:, -1]


# --------------------------------------------------------------------------- SVD view
def eqke_rank_one(eqke_matrix: Tensor) -> tuple[float, Tensor, Tensor]:
    """(sigma1 / sigma2, size_direction [d_vocab (key)], query_direction [d_vocab (query)]).

    Sign convention: the size direction (first right singular vector, over key tokens) is
    turned so that it correlates positively with the token index (sum_j (j - mean) v_j > 0);
    the query direction is then the first left singular vector u with EQKE v = sigma1 u,
    sigma1 > 0 (so EQKE ~ sigma1 u v^T). Both have unit norm.
    """
    U, S, Vh = torch.linalg.svd(eqke_matrix)
    v, u = Vh[0], U[:, 0]
    index = torch.arange(v.shape[0], dtype=v.dtype, device=v.device)
    if torch.dot(v, index - index.mean()) < 0:
        u, v = -u, -v
    ratio = float(S[0] / S[1]) if S.shape[0] > 1 else float("inf")
    return ratio, v, u


def correlation(a: Tensor, b: Tensor) -> float:
    a = a.double() - a.double().mean()
    b = b.double() - b.double().mean()
    return float((a @ b) / (a.norm() * b.norm()))


def size_direction_correlation(eqke_matrix: Tensor) -> float:
    _, v, _ = eqke_rank_one(eqke_matrix)
    return correlation(v, torch.arange(v.shape[0], dtype=torch.float64, device=v.device))


# --------------------------------------------------------------------------- brute force
def gap_totals(d_vocab: int, n_ctx: int) -> list[int]:
    """How many of the d_vocab ** n_ctx inputs have each gap (largest - second largest, with repeats).

    Counted exactly: the largest value a appears once and the rest top out at b < a in
    n ((b+1)^(n-1) - b^(n-1)) ways; a appears at least twice (gap 0) in
    (a+1)^n - a^n - n a^(n-1) ways.
    """
    n = n_ctx
    totals = [0] * d_vocab
    if n == 1:
        totals[0] = d_vocab          # a single token: no second token, gap 0 by convention
        return totals
    for a in range(d_vocab):
        totals[0] += (a + 1) ** n - a ** n - n * a ** (n - 1)
        for b in range(a):
            totals[a - b] += n * ((b + 1) ** (n - 1) - b ** (n - 1))
    return totals


def gaps_of(tokens: Tensor) -> Tensor:
    """tokens [batch, n] -> gap between the largest and the second-largest token [batch]."""
    if tokens.shape[-1] == 1:
        return torch.zeros(tokens.shape[0], dtype=torch.long, device=tokens.device)
    top = tokens.topk(2, dim=-1).values
    return top[:, 0] - top[:, 1]


@dataclass
class BruteForceResult:
    n_inputs: int
    n_correct: int
    errors_by_gap: list[int]       # wrong answers per gap (index = gap)
    totals_by_gap: list[int]       # inputs per gap
    seconds: float
    device: str
    wrong_examples: Tensor = field(default_factory=lambda: torch.empty(0, 0, dtype=torch.long))

    @property
    def accuracy(self) -> float:
        return self.n_correct / self.n_inputs

    @property
    def n_wrong(self) -> int:
        return self.n_inputs - self.n_correct


def strictly_correct(logits: Tensor, target: Tensor) -> Tensor:
    """[..., d_vocab] logits, [...] targets -> bool: the target's logit beats every other logit.

    Strict: a tie counts as wrong (a model with all-equal logits gets nothing right).
    For a trained model this is ``logits.argmax(-1) == target`` up to exact ties.
    """
    chosen = logits.gather(-1, target[..., None])
    others = logits.scatter(-1, target[..., None], float("-inf")).amax(-1, keepdim=True)
    return (chosen > others).squeeze(-1)


def _position_tables(c: Circuits, q: int, dtype: torch.dtype) -> list[Tensor]:
    """For last token q: one [d_vocab (token), d_vocab (output)] table per free position i < n-1,
    with  Z * logits = sum_i table_i[t_i]  for every input ending in q.

    logits = EU[q] + sum_i p_i (EVOU[t_i] + PVOU[i]) = sum_i e_i (EVOU[t_i] + PVOU[i] + EU[q]) / Z
    with e_i = exp(score_i - score_q) and Z = sum_i e_i >= 1 (the query's own term is 1), so no
    term that matters can underflow, and Z does not change which logit is largest. The query's
    term is folded into the first table (or returned alone when n_ctx == 1). Raises
    FloatingPointError when some e_i times a value could overflow ``dtype``.
    """
    n = c.n_ctx
    EQKE, EQKP, EU, EVOU, PVOU = (t.to(dtype) for t in c.as_tuple())
    scores = EQKE[q][None, :] + EQKP[q][:, None]                  # [n_ctx (position), d_vocab (token)]
    shift = scores[n - 1, q]                                      # the query's own score
    base = EVOU + EU[q]                                           # [d_vocab, d_vocab]
    query_term = base[q] + PVOU[n - 1]                            # its weight is exp(0) = 1
    if n == 1:
        return [query_term[None, :]]
    free = scores[: n - 1] - shift                                # [n-1, d_vocab]
    values_max = float((base.abs().max() + PVOU.abs().max()).item())
    limit = math.log(torch.finfo(dtype).max) - math.log(n * values_max + 1.0) - 1.0
    if float(free.max()) > limit:
        raise FloatingPointError("scores span too wide a range for this dtype")
    e = torch.exp(free)
    tables = [e[i][:, None] * (base + PVOU[i]) for i in range(n - 1)]
    tables[0] = tables[0] + query_term
    return tables


def _grid_correct(c: Circuits, q: int, first: Optional[Tensor], dtype: torch.dtype,
                  chunk: int = 4, buffer: Optional[Tensor] = None) -> Tensor:
    """Whether the model is right on every input ending in q: bool [len(first), d_vocab, ..., d_vocab]
    indexed by the first n_ctx - 1 tokens. Works in chunks of ``chunk`` first tokens so that
    each chunk's logits grid stays small (4 x 64^3 floats = 4 MiB for max-of-4)."""
    n, V = c.n_ctx, c.d_vocab
    device = c.EQKE.device
    tables = _position_tables(c, q, dtype)
    if n == 1:
        return strictly_correct(tables[0], torch.tensor([q], device=device))
    firsts = first if first is not None else torch.arange(V, device=device)
    T0 = tables[0][firsts]                                        # [F, V]
    # Sum of the other free positions' tables, laid out as a grid [V]*(n-2) + [V (output)].
    rest = torch.zeros(V, dtype=dtype, device=device)
    rest_max = torch.tensor(q, device=device)
    ar = torch.arange(V, device=device)
    for i in range(1, n - 1):
        rest = rest[..., None, :] + tables[i]
        rest_max = torch.maximum(rest_max[..., None], ar)
    lead = (1,) * (n - 2)
    F = firsts.shape[0]
    out = torch.empty((F, *rest.shape[:-1]), dtype=torch.bool, device=device)
    for s in range(0, F, chunk):
        k = min(chunk, F - s)
        shape = (k, *rest.shape)
        grid_out = None
        if buffer is not None and buffer.numel() >= math.prod(shape) and buffer.dtype == dtype:
            grid_out = buffer[: math.prod(shape)].view(shape)
        grid = torch.add(T0[s:s + k].view(k, *lead, V), rest, out=grid_out)
        target = torch.maximum(firsts[s:s + k].view(k, *lead), rest_max)
        chosen = grid.gather(-1, target[..., None])
        grid.scatter_(-1, target[..., None], float("-inf"))
        out[s:s + k] = (chosen > grid.amax(-1, keepdim=True)).squeeze(-1)
    return out


def _decode(flat_index: Tensor, d_vocab: int, n_free: int, first_tokens: Optional[Tensor]) -> Tensor:
    digits = []
    rest = flat_index
    for _ in range(n_free - 1):
        digits.append(rest % d_vocab)
        rest = rest // d_vocab
    digits.append(first_tokens[rest] if first_tokens is not None else rest)
    return torch.stack(digits[::-1], dim=-1)


def brute_force(c: Circuits, device: torch.device | str | None = None,
                first_tokens: Optional[Sequence[int]] = None, dtype: torch.dtype = torch.float32,
                keep_examples: int = 64, chunk: Optional[int] = None,
                cpu_threads: Optional[int] = 1) -> BruteForceResult:
    """Accuracy of the model described by ``c`` on every input (or on every input whose first
    token is in ``first_tokens``), with the errors broken down by the gap between the two
    largest tokens. "Right" means the max token's logit is strictly the largest.

    Memory: ``chunk * d_vocab^(n_ctx-1)`` floats at a time: by default 4 first tokens on the CPU
    (4 MiB for max-of-4 in float32, cache-sized) and 64 on a GPU (64 MiB, fewer kernel launches).
    On the CPU the chunks are cache-sized and work best on one thread (``cpu_threads``; the
    previous setting is restored afterwards); ``None`` keeps torch's setting.
    """
    from mechinterp_edu.device import get_device

    device = torch.device(device) if device is not None else get_device()
    V, n = c.d_vocab, c.n_ctx
    chunk = chunk or (4 if device.type == "cpu" else 64)
    c = c.to(device)
    first = None
    if first_tokens is not None and n > 1:
        first = torch.as_tensor(list(first_tokens), dtype=torch.long, device=device)
    buffer = torch.empty(chunk * V ** (n - 1), dtype=dtype, device=device) if n > 1 else None
    previous_threads = torch.get_num_threads()
    if device.type == "cpu" and cpu_threads:
        torch.set_num_threads(cpu_threads)
    try:
        return _brute_force(c, device, first, buffer, dtype, keep_examples, chunk)
    finally:
        torch.set_num_threads(previous_threads)


def _brute_force(c, device, first, buffer, dtype, keep_examples, chunk) -> BruteForceResult:
    V, n = c.d_vocab, c.n_ctx
    start = time.perf_counter()
    n_inputs = n_correct = 0
    errors = [0] * V
    examples: list[Tensor] = []
    with torch.inference_mode():
        for q in range(V):
            try:
                ok = _grid_correct(c, q, first, dtype, chunk, buffer)
            except FloatingPointError:
                try:
                    ok = _grid_correct(c, q, first, torch.float64, chunk)
                except FloatingPointError:
                    raise ValueError(f"the scores of query token {q} span so wide a range that exp() "
                                     "overflows even in float64; this brute force cannot evaluate "
                                     "this model") from None
            n_inputs += ok.numel()
            n_wrong_here = ok.numel() - int(ok.sum())
            n_correct += ok.numel() - n_wrong_here
            if n_wrong_here:
                idx = (~ok).reshape(-1).nonzero().squeeze(-1)
                if n > 1:
                    free = _decode(idx, V, n - 1, first)
                    seqs = torch.cat([free, torch.full_like(free[:, :1], q)], dim=-1)
                else:
                    seqs = torch.full((1, 1), q, device=device)
                for g, k in zip(*torch.unique(gaps_of(seqs), return_counts=True)):
                    errors[int(g)] += int(k)
                if sum(x.shape[0] for x in examples) < keep_examples:
                    examples.append(seqs[:keep_examples].cpu())
    if device.type == "cuda":
        torch.cuda.synchronize(device)
    seconds = time.perf_counter() - start
    totals = gap_totals(V, n) if first is None else _subset_gap_totals(V, n, first.cpu())
    kept = torch.cat(examples)[:keep_examples] if examples else torch.empty(0, n, dtype=torch.long)
    return BruteForceResult(n_inputs, n_correct, errors, totals, seconds, str(device), kept)


def _subset_gap_totals(V: int, n: int, first: Tensor) -> list[int]:
    totals = [0] * V
    rest = torch.cartesian_prod(*[torch.arange(V)] * (n - 1)).reshape(-1, n - 1)
    for t0 in first.tolist():
        seqs = torch.cat([torch.full_like(rest[:, :1], t0), rest], dim=-1)
        g, k = torch.unique(gaps_of(seqs), return_counts=True)
        for gi, ki in zip(g.tolist(), k.tolist()):
            totals[gi] += ki
    return totals


def grid_correct(c: Circuits, last_token: int, dtype: torch.dtype = torch.float32) -> Tensor:
    """The brute force's own verdicts for every input ending in ``last_token``: a bool grid
    [d_vocab] * (n_ctx - 1) indexed by the first n_ctx - 1 tokens (tests compare it with the model)."""
    with torch.inference_mode():
        try:
            return _grid_correct(c, last_token, None, dtype)
        except FloatingPointError:
            return _grid_correct(c, last_token, None, torch.float64)


def random_weights(d_vocab: int = 64, n_ctx: int = 4, d_model: int = 32, d_head: int = 32, seed: int = 0,
                   dtype: torch.dtype = torch.float64, scale: float = 1.0) -> dict[str, Tensor]:
    """Random single-head weights (entries ~ N(0, scale^2 / d_model)) in the shapes of this lesson:
    no head axis, one scale for every matrix (``scale`` stretches the score range for tests).
    Lessons 1-3 use :func:`mechinterp_edu.models.toys.random_weights` (head axis, fan-in scales)."""
    gen = torch.Generator().manual_seed(seed)
    shapes = {"W_E": (d_vocab, d_model), "W_pos": (n_ctx, d_model), "W_Q": (d_model, d_head),
              "W_K": (d_model, d_head), "W_V": (d_model, d_head), "W_O": (d_head, d_model),
              "W_U": (d_model, d_vocab)}
    std = scale / math.sqrt(d_model)
    return {k: (torch.randn(*shape, generator=gen, dtype=torch.float64) * std).to(dtype)
            for k, shape in shapes.items()}


def copying_diagonal_fraction(matrix: Tensor) -> float:
    """Fraction of rows whose largest entry sits on the diagonal (1.0 = a clean copier)."""
    rows = matrix.shape[0]
    return float((matrix.argmax(dim=1) == torch.arange(rows, device=matrix.device)).double().mean())
