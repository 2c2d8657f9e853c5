"""Lesson 4 graded exercises on the compact proofs (references, cases, diagnoses).

Every bound is checked for soundness first, against the truth computed by enumerating every
input of the case's (small) model: a bound above the truth is named unsound, with the input
that breaks it. A sound bound is then accepted if it is at least as tight as the lesson's proof.
``PROOF_EXERCISES`` lists the exercises (the lesson's grading module includes them).
"""
from __future__ import annotations

import functools
from typing import Optional

import torch
from torch import Tensor

from mechinterp_edu.grader.spec import Case, Exercise, Mistake
from mechinterp_edu.lessons.max_of_k.proofs import correct_grid
from mechinterp_edu.lessons.max_of_k.proofs_cubic import cubic_group_margins
from mechinterp_edu.lessons.max_of_k.reference import Circuits, logits_from_tables

LESSON = 4
TABLES = ("EQKE", "EQKP", "EU", "EVOU", "PVOU")


# --------------------------------------------------------------------------- references
def strictly_correct_inputs(EQKE, EQKP, EU, EVOU, PVOU) -> Tensor:
    """Brute force: bool [d_vocab] * n_ctx, True where the max token's logit is strictly largest."""
    c = Circuits(EQKE, EQKP, EU, EVOU, PVOU).to(torch.float64)
    return torch.stack([correct_grid(c, q) for q in range(c.d_vocab)], dim=-1)


def pessimal_ablation_bound(g: Tensor, b: Tensor, w_lo: Tensor) -> Tensor:
    """min over w in [w_lo, 1] of w g + (1 - w) b: the worst average of a max-position value g and
    another value b when the max positions hold at least w_lo of the attention."""
    return torch.minimum(g, w_lo * g + (1 - w_lo) * b)


def cubic_bound(EQKE, EQKP, EU, EVOU, PVOU) -> Tensor:
    """The cubic proof's margin lower bound per group, [m, q, c] (see proofs_cubic)."""
    return cubic_group_margins(Circuits(EQKE, EQKP, EU, EVOU, PVOU))


def rank_one_residual_bound(EQKE: Tensor) -> Tensor:
    """gap[m, c] <= EQKE[q, m] - EQKE[q, t] for every query q and every key t <= c < m, from
    EQKE = sigma1 u v^T + R with |R| <= rho = max |R| (entries with c >= m: zero)."""
    E = EQKE.double()
    U, S, Vh = torch.linalg.svd(E)
    u, v = U[:, 0], Vh[0]
    rho = (E - S[0] * torch.outer(u, v)).abs().max()
    vmax, vmin = torch.cummax(v, 0).values, torch.cummin(v, 0).values

    def h(x):
        return S[0] * torch.where(x >= 0, u.min() * x, u.max() * x)

    gap = torch.minimum(h(v[:, None] - vmax[None, :]), h(v[:, None] - vmin[None, :])) - 2 * rho
    return torch.tril(gap, -1)


# --------------------------------------------------------------------------- cases
def _planted(V: int, n: int, seed: int, slope: float = 2.0, copy: float = 6.0, noise: float = 0.3):
    """Tables of a model that mostly solves max-of-K: EQKE rising with the key, EVOU copying."""
    g = torch.Generator().manual_seed(seed)
    r = lambda *s: torch.randn(*s, generator=g, dtype=torch.float64)  # noqa: E731
    u = 1 + 0.2 * r(V).abs()
    EQKE = slope * torch.outer(u, torch.arange(V, dtype=torch.float64)) + noise * r(V, V)
    return (EQKE, 0.1 * r(V, n), noise * r(V, V), copy * torch.eye(V, dtype=torch.float64) + noise * r(V, V),
            0.1 * r(n, V))


def _random(V: int, n: int, seed: int, scale: float = 2.0):
    g = torch.Generator().manual_seed(seed)
    return tuple(scale * torch.randn(*s, generator=g, dtype=torch.float64)
                 for s in ((V, V), (V, n), (V, V), (V, V), (n, V)))


def _integer_ties(V: int, n: int):
    """Uniform attention and EVOU = I: an input with three different tokens gives three equal top
    logits, an exact tie (which counts as wrong)."""
    EQKE = torch.zeros(V, V, dtype=torch.float64)
    EVOU = torch.eye(V, dtype=torch.float64)
    return EQKE, torch.zeros(V, n, dtype=torch.float64), torch.zeros(V, V, dtype=torch.float64), EVOU, \
        torch.zeros(n, V, dtype=torch.float64)


def table_cases() -> list[Case]:
    specs = [("planted, d_vocab 8, n_ctx 4", _planted(8, 4, 0)),
             ("planted, d_vocab 10, n_ctx 3, noisier", _planted(10, 3, 1, noise=0.8)),
             ("planted, d_vocab 6, n_ctx 2", _planted(6, 2, 2)),
             ("random, d_vocab 6, n_ctx 3", _random(6, 3, 3)),
             ("integer tables with ties, d_vocab 5, n_ctx 3", _integer_ties(5, 3)),
             ("all zero (every logit ties), d_vocab 4, n_ctx 3", tuple(torch.zeros_like(t) for t in _random(4, 3, 4)))]
    return [Case(label, args, {"d_vocab": args[0].shape[0], "n_ctx": args[1].shape[1]}) for label, args in specs]


def mix_cases() -> list[Case]:
    g = torch.Generator().manual_seed(7)
    out = []
    for label, k in (("random values, 64 entries", 64), ("random values, 7 entries", 7)):
        vals = 5 * torch.randn(2, k, generator=g, dtype=torch.float64)
        w_lo = torch.rand(k, generator=g, dtype=torch.float64)
        w_lo[0], w_lo[-1] = 0.0, 1.0
        out.append(Case(label, (vals[0], vals[1], w_lo), {}))
    return out


def eqke_cases() -> list[Case]:
    cases = [Case(f"planted EQKE, d_vocab {V}", (_planted(V, 3, s, noise=nz)[0],), {"d_vocab": V})
             for V, s, nz in ((12, 5, 0.3), (9, 6, 1.0), (16, 8, 0.1))]
    cases.append(Case("random EQKE, d_vocab 7", (_random(7, 2, 9)[0],), {"d_vocab": 7}))
    try:
        from mechinterp_edu.lessons.max_of_k.reference import eqke
        from mechinterp_edu.lessons.max_of_k.model import weights_from_checkpoint
        w = weights_from_checkpoint(torch.float64)
        cases.append(Case("trained max_of_4 EQKE", (eqke(w["W_E"], w["W_pos"], w["W_Q"], w["W_K"]),),
                          {"d_vocab": 64}))
    except Exception:  # noqa: BLE001 - a missing checkpoint drops this case only
        pass
    return cases


# --------------------------------------------------------------------------- truths and diagnoses
@functools.lru_cache(maxsize=16)
def _truth(label: str, tables: tuple) -> tuple[Tensor, Tensor]:
    """Exact per-group minimum margin [m, q, c] (+inf for empty groups) and the input attaining it."""
    c = Circuits(*tables)
    V, n = c.d_vocab, c.n_ctx
    tokens = torch.cartesian_prod(*[torch.arange(V)] * n).reshape(-1, n)
    logits = logits_from_tables(tokens, c)
    m = tokens.max(-1).values
    margin = logits.gather(-1, m[:, None])[:, 0] - logits.scatter(-1, m[:, None], float("-inf")).amax(-1)
    below = torch.where(tokens < m[:, None], tokens, torch.full_like(tokens, -1)).max(-1).values
    cc = torch.where(below < 0, m, below)
    key = (m * V + tokens[:, -1]) * V + cc
    truth = torch.full((V ** 3,), float("inf"), dtype=torch.float64)
    truth = truth.scatter_reduce(0, key, margin, reduce="amin")
    worst = torch.zeros(V ** 3, n, dtype=torch.long)
    hit = margin == truth[key]
    worst[key[hit]] = tokens[hit]
    return truth.view(V, V, V), worst.view(V, V, V, n)


def _tol(x: Tensor) -> float:
    finite = x[torch.isfinite(x)]
    return 1e-7 * (1.0 + float(finite.abs().max()) if finite.numel() else 1.0)


def _is_reference(expected: Tensor, reference: Tensor) -> bool:
    both = torch.isfinite(reference)
    return bool((torch.isfinite(expected) == both).all()) and torch.allclose(expected[both], reference[both])


def _looser(got: Tensor, expected: Tensor, valid: Tensor, what: str, index_names) -> Optional[str]:
    tol = _tol(expected)
    close = (got - expected).abs() <= tol
    if bool((close | ~valid).all()):
        return None
    if not bool(((got >= expected - tol) | ~valid).all()):
        idx = tuple(int(i) for i in ((got < expected - tol) & valid).nonzero()[0])
        return (f"sound, but looser than the lesson's {what} at {index_names(idx)}: yours {float(got[idx]):.6g}, "
                f"the proof's {float(expected[idx]):.6g}")
    return None                                   # sound and at least as tight: accepted


def compare_cubic(got: Tensor, expected: Tensor, case: Case) -> Optional[str]:
    V = case.args[0].shape[0]
    if tuple(got.shape) != (V, V, V):
        return f"return one bound per group, shape [m, q, c] = {(V, V, V)}; got {tuple(got.shape)}"
    truth, worst = _truth(case.label, tuple(case.args))
    valid = torch.isfinite(truth)
    got = got.double()
    bad = valid & (got > truth + _tol(truth))
    if bad.any():
        over = torch.where(bad, got - truth, torch.zeros_like(got))
        idx = tuple(int(i) for i in (over == over.max()).nonzero()[0])
        x = worst[idx].tolist()
        t, g = float(truth[idx]), float(got[idx])
        text = (f"unsound: for the group (m, q, c) = {idx} you claim every margin is at least {g:.6g}, but the "
                f"input {x} has margin {t:.6g} (case {case.label})")
        if t == 0 and g > 0:
            text += ("; that input's top logits tie, and a tie counts as wrong: the task asks for the "
                     "strictly largest logit")
        elif t <= 0 < g:
            text += "; so your bound certifies an input the model gets wrong"
        return text
    if not _is_reference(expected, cubic_bound(*case.args)):           # matching a catalogued variant
        return None if bool((((got - expected).abs() <= _tol(expected)) | ~valid).all()) else "differs"
    text = _looser(got, expected, valid, "cubic bound", lambda i: f"group (m, q, c) = {i}")
    return text and (text + f" (case {case.label}). Take the worst case over each set of positions that "
                     "can hold m, with every other score at its largest possible value")


def compare_gap(got: Tensor, expected: Tensor, case: Case) -> Optional[str]:
    (E,) = case.args
    E = E.double()
    V = E.shape[0]
    if tuple(got.shape) != (V, V):
        return f"return gap[m, c] of shape {(V, V)}; got {tuple(got.shape)}"
    valid = torch.ones(V, V, dtype=torch.bool).tril(-1)
    diff = E[:, :, None] - E[:, None, :]                                   # [q, m, t]
    ok_t = torch.arange(V)[None, :, None] >= torch.arange(V)[None, None, :]   # [1, c, t]: t <= c
    truth = torch.where(ok_t[None], diff[:, :, None, :], torch.tensor(float("inf"), dtype=E.dtype))
    truth = truth.amin(-1).amin(0)                                         # [m, c]
    got = got.double()
    bad = valid & (got > truth + _tol(truth))
    if bad.any():
        m, c = (int(i) for i in bad.nonzero()[0])
        sub = torch.where(torch.arange(V)[None, :] <= c, E[:, m:m + 1] - E, torch.tensor(float("inf"), dtype=E.dtype))
        q, t = (int(i) for i in (sub == sub.min()).nonzero()[0])
        return (f"unsound: you claim EQKE[q, {m}] - EQKE[q, t] >= {float(got[m, c]):.6g} for every query q and "
                f"key t <= {c}, but query {q} and key {t} give {float(sub[q, t]):.6g} (case {case.label}): "
                "the residual R = EQKE - sigma1 u v^T can lower the gap by up to 2 max|R|")
    if not _is_reference(expected, rank_one_residual_bound(E)):
        return None if bool((((got - expected).abs() <= _tol(expected)) | ~valid).all()) else "differs"
    text = _looser(got, expected, valid, "rank-one bound", lambda i: f"(m, c) = {i}")
    return text and text + f" (case {case.label})"


def compare_mix(got: Tensor, expected: Tensor, case: Case) -> Optional[str]:
    g, b, w_lo = (t.double() for t in case.args)
    got = got.double()
    if got.shape != expected.shape:
        return f"return one bound per entry, shape {tuple(expected.shape)}; got {tuple(got.shape)}"
    for w in (w_lo, torch.ones_like(w_lo)):                 # the two ends of [w_lo, 1]
        value = w * g + (1 - w) * b
        bad = got > value + 1e-9 * (1 + value.abs())
        if bad.any():
            i = int(bad.nonzero()[0])
            return (f"unsound at entry {i}: g = {float(g[i]):.4g}, b = {float(b[i]):.4g}, w_lo = {float(w_lo[i]):.4g}; "
                    f"the weight w = {float(w[i]):.4g} is allowed and gives w g + (1 - w) b = {float(value[i]):.6g}, "
                    f"below your bound {float(got[i]):.6g}")
    if torch.allclose(got, expected, atol=1e-9) or not torch.allclose(expected, pessimal_ablation_bound(g, b, w_lo)):
        return None if torch.allclose(got, expected, atol=1e-9) else "differs"
    i = int((expected - got).argmax())
    return (f"sound, but looser than needed at entry {i}: yours {float(got[i]):.6g}, the smallest value over "
            f"w in [w_lo, 1] is {float(expected[i]):.6g} (a linear function of w is smallest at an end)")


# --------------------------------------------------------------------------- mistakes
def _ties_as_correct(EQKE, EQKP, EU, EVOU, PVOU):
    c = Circuits(EQKE, EQKP, EU, EVOU, PVOU).to(torch.float64)
    V, n = c.d_vocab, c.n_ctx
    tokens = torch.cartesian_prod(*[torch.arange(V)] * n).reshape(-1, n)
    logits = logits_from_tables(tokens, c)
    m = tokens.max(-1).values
    ok = logits.gather(-1, m[:, None])[:, 0] >= logits.amax(-1)
    return ok.view(*([V] * n))


def _argmax_based(EQKE, EQKP, EU, EVOU, PVOU):
    c = Circuits(EQKE, EQKP, EU, EVOU, PVOU).to(torch.float64)
    V, n = c.d_vocab, c.n_ctx
    tokens = torch.cartesian_prod(*[torch.arange(V)] * n).reshape(-1, n)
    return (logits_from_tables(tokens, c).argmax(-1) == tokens.max(-1).values).view(*([V] * n))


def _sigma2_gap(EQKE):
    E = EQKE.double()
    U, S, Vh = torch.linalg.svd(E)
    u, v = U[:, 0], Vh[0]
    rho = S[1]
    vmax, vmin = torch.cummax(v, 0).values, torch.cummin(v, 0).values
    h = lambda x: S[0] * torch.where(x >= 0, u.min() * x, u.max() * x)  # noqa: E731
    return torch.tril(torch.minimum(h(v[:, None] - vmax[None, :]), h(v[:, None] - vmin[None, :])) - 2 * rho, -1)


PROOF_EXERCISES = (
    Exercise(lesson=LESSON, name="strictly_correct_inputs", points=2, reference=strictly_correct_inputs,
             cases=table_cases, summary="Brute force: for every input, is the max token's logit strictly the largest?",
             difficulty=2, minutes=20, mistakes=[
                 Mistake("ties counted as correct",
                         "ties counted as correct: you used >= (or an argmax that wins ties); the task asks for "
                         "the strictly largest logit, so an input whose top logits tie is wrong", _ties_as_correct),
                 Mistake("argmax", "ties counted as correct: argmax picks the first of tied logits; compare the "
                         "max token's logit with every other logit using a strict >", _argmax_based)]),
    Exercise(lesson=LESSON, name="pessimal_ablation_bound", points=1, reference=pessimal_ablation_bound,
             cases=mix_cases, compare=compare_mix,
             summary="min over w in [w_lo, 1] of w g + (1 - w) b.", difficulty=1, minutes=10),
    Exercise(lesson=LESSON, name="cubic_bound", points=3, reference=cubic_bound, cases=table_cases,
             compare=compare_cubic, timeout_s=60.0,
             summary="The cubic proof: a margin lower bound for every (max, query, largest other token) group.",
             difficulty=3, minutes=45),
    Exercise(lesson=LESSON, name="rank_one_residual_bound", points=2, reference=rank_one_residual_bound,
             cases=eqke_cases, compare=compare_gap,
             summary="A score-gap floor from EQKE = sigma1 u v^T + R, valid for every query.",
             difficulty=2, minutes=25, mistakes=[
                 Mistake("sigma2 instead of max |R|",
                         "sound, but you bounded the residual by sigma2 (the spectral norm); the entries of R "
                         "are smaller: use rho = max |EQKE - sigma1 u v^T|", _sigma2_gap)]),
)
