"""Compact proofs of a max-of-K model's accuracy (after Gross et al. 2024), part 1: the common
parts and the brute-force proof.

A *proof strategy* takes the seven weight matrices of a one-layer, one-head, attention-only
model with zero biases (``W_E, W_pos, W_Q, W_K, W_V, W_O, W_U``, head axis removed; float64)
and returns a :class:`ProofResult`: a number of inputs
it *certifies* (inputs on which the correct answer's logit is strictly larger than every other
logit: a tie counts as wrong) and the bound ``n_certified / d_vocab ** n_ctx``, which is a
lower bound on the accuracy whenever the strategy is sound. Each strategy counts the
floating-point operations it performs (:class:`Flops`: a multiply-add of a matrix product
counts 2, every elementwise operation, comparison or reduction step counts 1, table lookups
count 0), so the cost is measured from the work done, not estimated from wall time.

Strategies (their ``kind`` in brackets):

* :func:`brute_force_proof` [brute]: evaluates every input; bound == accuracy.
* ``proofs_cubic.cubic_proof`` [cubic]: worst case per (max, query, largest non-max token).
* ``proofs_subcubic``: the rank-one view of EQKE [subcubic], and a proof without structure.

All strategies run on the tables' device, batched. Float64 rounding is far below the margins
the bounds work with; the cubic and subcubic strategies certify an input only when its bound
exceeds ``SAFETY`` times the largest table entry, so rounding cannot turn a tie into a win.
"""
from __future__ import annotations

import math
import time
from dataclasses import dataclass, field
from typing import Callable

import torch
from jaxtyping import Bool, Float
from torch import Tensor

from mechinterp_edu.lessons.max_of_k.reference import WEIGHT_NAMES, Circuits

SAFETY = 1e-9          # margins below SAFETY * (largest |table entry|) are not certified


class Flops:
    """Counts floating-point operations as they are performed (see the module docstring)."""

    def __init__(self) -> None:
        self.count = 0

    def ew(self, t: Tensor, per: int = 1) -> Tensor:
        """Count ``per`` operations for every element of ``t`` (an elementwise result)."""
        self.count += per * t.numel()
        return t

    def reduce(self, source: Tensor, out: Tensor) -> Tensor:
        """A reduction (max, min, sum, logsumexp) of ``source``: one operation per input element."""
        self.count += source.numel()
        return out

    def mm(self, a: Tensor, b: Tensor) -> Tensor:
        out = a @ b
        self.count += 2 * a.shape[-1] * out.numel()
        return out


@dataclass
class ProofResult:
    name: str
    kind: str                       # "brute" | "cubic" | "subcubic"
    bound: float                    # n_certified / n_inputs
    flops: int
    seconds: float
    n_certified: int
    n_inputs: int
    device: str = "cpu"
    detail: dict = field(default_factory=dict)

    def as_json(self) -> dict:
        return {"name": self.name, "kind": self.kind, "bound": self.bound, "flops": int(self.flops),
                "seconds": self.seconds}


Weights = dict[str, Tensor]


def _timed(fn: Callable[[Weights, Flops], tuple[int, dict]], name: str, kind: str,
           w: Weights) -> ProofResult:
    w = {k: w[k].to(torch.float64) for k in WEIGHT_NAMES}
    device = w["W_E"].device
    flops = Flops()
    start = time.perf_counter()
    with torch.inference_mode():
        n_certified, detail = fn(w, flops)
    if device.type == "cuda":
        torch.cuda.synchronize(device)
    seconds = time.perf_counter() - start
    n_inputs = w["W_E"].shape[0] ** w["W_pos"].shape[0]
    return ProofResult(name, kind, n_certified / n_inputs, flops.count, seconds, int(n_certified),
                       n_inputs, str(device), detail)


def tables(w: Weights, flops: Flops, factors: tuple[Tensor, Tensor] | None = None,
           eqke: bool = True) -> Circuits:
    """The five tables (as ``reference.max_of_k.circuits``), counting the operations.

    ``factors``: (q, keys) = (E_q W_Q / sqrt(d_head), E_bar W_K) when a proof has already computed
    (and counted) them; ``eqke=False`` leaves EQKE as zeros, for a proof that never reads it (its
    O(d_vocab^2 d_head) product is then not paid for)."""
    d_head = w["W_Q"].shape[-1]
    P_avg = flops.reduce(w["W_pos"], w["W_pos"].mean(0))
    P_hat = flops.ew(w["W_pos"] - P_avg)
    E_bar = flops.ew(w["W_E"] + P_avg)
    E_q = flops.ew(w["W_E"] + w["W_pos"][-1])
    if factors is None:
        q = flops.ew(flops.mm(E_q, w["W_Q"]) / math.sqrt(d_head))      # [V, d_head]
        keys = flops.mm(E_bar, w["W_K"]) if eqke else None
    else:
        q, keys = factors
    OVU = flops.mm(flops.mm(w["W_V"], w["W_O"]), w["W_U"])            # [d_model, V]
    V = w["W_E"].shape[0]
    EQKE = flops.mm(q, keys.T) if eqke else torch.zeros(V, V, dtype=q.dtype, device=q.device)
    return Circuits(EQKE, flops.mm(q, flops.mm(P_hat, w["W_K"]).T),
                    flops.mm(E_q, w["W_U"]), flops.mm(E_bar, OVU), flops.mm(P_hat, OVU))


def safety_margin(c: Circuits) -> float:
    return SAFETY * max(float(t.abs().max()) for t in c.as_tuple())


def top2_excluding(M: Float[Tensor, "row col"], flops: Flops) -> Float[Tensor, "row col"]:
    """out[r, m] = M[r, m] - max_{o != m} M[r, o]: how far entry m beats every other of its row.

    Uses the two largest entries of each row (cost O(rows * cols), not cols^2)."""
    top = flops.reduce(M, M.topk(2, dim=-1))
    best, second = top.values[:, 0:1], top.values[:, 1:2]
    is_best = torch.arange(M.shape[-1], device=M.device)[None, :] == top.indices[:, 0:1]
    other = flops.ew(torch.where(is_best, second, best))
    return flops.ew(M - other)


# --------------------------------------------------------------------------- counting inputs
def count_inputs(V: int, n: int, m: int, c: int, query: str) -> int:
    """How many inputs of n tokens in [0, V) have maximum m and largest token below m exactly c.

    ``query``: "max" (the last token is m), "c" (the last token is c), "below" (the last token is
    some fixed q < c), or "any" (any last token). ``c = -1`` means every token is m.
    """
    if c < 0:
        return 1
    f = n - 1                                        # the free (non-query) positions
    if query == "max":
        return (c + 2) ** f - (c + 1) ** f           # free tokens in [0, c] + {m}, at least one c
    if query == "c":
        return (c + 2) ** f - (c + 1) ** f           # free tokens in [0, c] + {m}, at least one m
    if query == "below":
        return (c + 2) ** f - 2 * (c + 1) ** f + c ** f  # at least one m and at least one c
    if query == "any":
        return sum(math.comb(n, a) * ((c + 1) ** (n - a) - c ** (n - a)) for a in range(1, n))
    raise ValueError(f"unknown query kind {query!r}")


# --------------------------------------------------------------------------- brute force
def _query_tables(c: Circuits, q: int, flops: Flops) -> list[Tensor]:
    """For last token q: tables T_i [d_vocab (token), d_vocab (logit)], one per free position,
    with Z * logits = sum_i T_i[x_i] (Z > 0; the query's own term folded into T_0)."""
    n = c.n_ctx
    scores = flops.ew(c.EQKE[q][None, :] + c.EQKP[q][:, None])          # [n, V]
    free = flops.ew(scores[: n - 1] - scores[n - 1, q])                   # shift by the query's own score
    e = flops.ew(torch.exp(free))
    if not bool(torch.isfinite(e).all()):
        raise ValueError(f"the scores of query token {q} exceed its own score by more than float64's exp() can "
                         "hold, so the brute-force certificate cannot evaluate this model; use the cubic or "
                         "subcubic proofs (all_proofs(w, brute=False))")
    base = flops.ew(c.EVOU + c.EU[q])                                     # [V, V]
    tables = [flops.ew(e[i][:, None] * flops.ew(base + c.PVOU[i])) for i in range(n - 1)]
    query_term = flops.ew(base[q] + c.PVOU[n - 1])
    tables[0] = flops.ew(tables[0] + query_term)
    return tables


def correct_grid(c: Circuits, q: int, flops: Flops | None = None,
                 chunk: int = 4) -> Bool[Tensor, "..."]:
    """Whether the model is strictly right on each input ending in q, float64: bool grid
    [d_vocab] * (n_ctx - 1) indexed by the free tokens."""
    flops = flops or Flops()
    V, n = c.d_vocab, c.n_ctx
    dev = c.EQKE.device
    if n == 1:
        logits = flops.ew(c.EU[q] + c.EVOU[q] + c.PVOU[0])
        others = torch.cat([logits[:q], logits[q + 1:]])
        return flops.reduce(others, bool((logits[q] > others).all())) * torch.ones((), dtype=torch.bool)
    tables = _query_tables(c, q, flops)
    rest = torch.zeros(V, dtype=torch.float64, device=dev)
    rest_max = torch.tensor(q, device=dev)
    ar = torch.arange(V, device=dev)
    for i in range(1, n - 1):
        rest = flops.ew(rest[..., None, :] + tables[i])
        rest_max = torch.maximum(rest_max[..., None], ar)
    lead = (1,) * (n - 2)
    out = torch.empty((V, *rest.shape[:-1]), dtype=torch.bool, device=dev)
    for s in range(0, V, chunk):
        k = min(chunk, V - s)
        grid = flops.ew(tables[0][s:s + k].view(k, *lead, V) + rest)
        target = torch.maximum(ar[s:s + k].view(k, *lead), rest_max)
        chosen = grid.gather(-1, target[..., None])
        grid.scatter_(-1, target[..., None], float("-inf"))
        best_other = flops.reduce(grid, grid.amax(-1, keepdim=True))
        out[s:s + k] = flops.ew((chosen > best_other).squeeze(-1))
    return out


def _brute(w: Weights, flops: Flops) -> tuple[int, dict]:
    c = tables(w, flops)
    n_correct = 0
    for q in range(c.d_vocab):
        n_correct += int(correct_grid(c, q, flops).sum())
    return n_correct, {"method": "every input, float64, strictly largest logit"}


def brute_force_proof(w: Weights) -> ProofResult:
    """Evaluate all d_vocab ** n_ctx inputs (float64): the certificate is the list of verdicts;
    its bound is the accuracy itself."""
    return _timed(_brute, "brute force", "brute", w)


def all_proofs(w: Weights, brute: bool = True) -> list[ProofResult]:
    """Every strategy on the weights ``w`` (brute force first when ``brute``)."""
    from mechinterp_edu.lessons.max_of_k.proofs_cubic import cubic_proof
    from mechinterp_edu.lessons.max_of_k.proofs_subcubic import SUBCUBIC

    out = [brute_force_proof(w)] if brute else []
    out.append(cubic_proof(w))
    out.extend(strategy(w) for strategy in SUBCUBIC)
    return out


# --------------------------------------------------------------------------- checking a certificate
def group_keys(tokens: Tensor) -> tuple[Tensor, Tensor, Tensor]:
    """tokens [batch, n] -> (m, q, c): the max, the query (last) token, and the largest token
    below the max (-1 when every token is the max)."""
    m = tokens.max(-1).values
    below = torch.where(tokens < m[:, None], tokens, torch.full_like(tokens, -1))
    return m, tokens[:, -1], below.max(-1).values


def certified_mask(result: ProofResult, tokens: Tensor) -> Tensor:
    """Which of ``tokens`` [batch, n] the cubic or subcubic ``result`` certifies (bool [batch]),
    read back from its per-group worst cases: tests check certified => correct, input by input."""
    d = result.detail
    m, q, c = group_keys(tokens.cpu())
    eps = d["eps"]
    all_m = c < 0
    cc = c.clamp(min=0)
    if "worst_below" in d:                                   # cubic: groups (m, q, c)
        value = torch.where(q == m, d["worst_max"][m, cc], d["worst_below"][q, m, cc])
    else:                                                    # subcubic: groups (m, c)
        value = d["worst"][m, cc]
    value = torch.where(all_m, d["all_max"][m], value)
    return value > eps


def all_inputs_with_last(V: int, n: int, q: int) -> Tensor:
    """Every input of n tokens in [0, V) whose last token is q: [V ** (n - 1), n]."""
    if n == 1:
        return torch.tensor([[q]])
    free = torch.cartesian_prod(*[torch.arange(V)] * (n - 1)).reshape(-1, n - 1)
    return torch.cat([free, torch.full((free.shape[0], 1), q)], dim=1)
