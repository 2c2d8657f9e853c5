"""Lesson 4 speed figures for ``python -m mechinterp_edu bench``: the brute force over every input
via the circuit tables, against the slow baseline kept here (the model's own float64 forward
pass, one batch per first token) on the same inputs in the same run."""
from __future__ import annotations

import time
from typing import Iterable, Optional

import torch

from mechinterp_edu.lessons.max_of_k import reference as ref


def brute_force_model_loop(model, first_tokens: Optional[Iterable[int]] = None,
                           dtype: torch.dtype = torch.float64,
                           device: torch.device | str | None = None) -> ref.BruteForceResult:
    """Baseline: the model's own forward pass in float64, one batch per value of the first token."""
    from mechinterp_edu.device import get_device

    device = torch.device(device) if device is not None else get_device()
    V, n = model.cfg.d_vocab, model.cfg.n_ctx
    model = model.to(device).to(dtype)
    firsts = list(range(V)) if first_tokens is None else list(first_tokens)
    rest = torch.cartesian_prod(*[torch.arange(V, device=device)] * (n - 1)).reshape(-1, n - 1)
    start = time.perf_counter()
    n_correct = 0
    errors = [0] * V
    with torch.inference_mode():
        for t0 in firsts:
            tokens = torch.cat([torch.full_like(rest[:, :1], t0), rest], dim=-1)
            wrong = ~ref.strictly_correct(model(tokens)[:, -1], tokens.max(-1).values)
            n_correct += int((~wrong).sum())
            for g, k in zip(*torch.unique(ref.gaps_of(tokens[wrong]), return_counts=True)):
                errors[int(g)] += int(k)
    if device.type == "cuda":
        torch.cuda.synchronize(device)
    seconds = time.perf_counter() - start
    totals = ref.gap_totals(V, n) if first_tokens is None else ref._subset_gap_totals(V, n, torch.tensor(firsts))
    return ref.BruteForceResult(len(firsts) * rest.shape[0], n_correct, errors, totals, seconds, str(device))


def bench(quick: bool):
    """Brute force over all inputs via the circuit tables vs the model's own float64 forward
    pass, one batch per first token (the same inputs in the same run)."""
    from mechinterp_edu.bench import BenchRow
    from mechinterp_edu.models.zoo import load_model

    model = load_model("max_of_4", device="cpu")
    c = ref.circuits_of(model, dtype=torch.float64)
    firsts = [0] if quick else None
    scope = "first token 0 only (quick)" if quick else f"all {c.d_vocab ** c.n_ctx:,} inputs"
    ref.brute_force(c, device="cpu", first_tokens=[0])          # warm-up (allocator, caches)
    fast = ref.brute_force(c, device="cpu", first_tokens=firsts)
    slow = brute_force_model_loop(model, first_tokens=firsts, device="cpu")
    agree = "same" if (fast.n_correct, fast.errors_by_gap) == (slow.n_correct, slow.errors_by_gap) else "DIFFERENT"
    rows = [BenchRow(
        f"max_of_4 brute force, circuit tables, float32 chunks, CPU ({scope})", fast.seconds,
        "model forward, float64, loop over first token", slow.seconds,
        note=f"accuracy {fast.accuracy:.6%}, {fast.n_wrong} wrong; {agree} count as the baseline; "
             f"brute force on 1 thread, baseline on {torch.get_num_threads()}")]
    if torch.cuda.is_available():
        ref.brute_force(c, device="cuda", first_tokens=[0])
        gpu = ref.brute_force(c, device="cuda", first_tokens=firsts)
        gpu_loop = brute_force_model_loop(load_model("max_of_4", device="cuda"), first_tokens=firsts,
                                          device="cuda")
        rows.append(BenchRow(f"max_of_4 brute force, circuit tables, GPU ({scope})", gpu.seconds,
                             "model forward, float64, loop over first token, GPU", gpu_loop.seconds,
                             note=f"accuracy {gpu.accuracy:.6%}"))
    return rows

