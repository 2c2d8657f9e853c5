"""Numbers that lesson 4's text states (``{{name}}`` placeholders), computed from the shipped
``max_of_4`` checkpoint, the untrained model, the bug-lab checkpoints and the proofs.

``tests/test_lesson04_facts.py`` asserts each against an independent computation (the model's
forward pass, a second brute force, an enumeration of every input, numpy's SVD).
"""
from __future__ import annotations

import functools
import math

import torch

LOW_KEYS = 16             # "key tokens 0-15": where EQKE's rows step down
SMALL_GAP = 2             # "the max and the next token below it are at most 2 apart"


def _recipe():
    from mechinterp_edu.lessons.max_of_k import model as recipe
    return recipe


def _ref():
    from mechinterp_edu.lessons.max_of_k import reference as ref
    return ref


@functools.lru_cache(maxsize=1)
def untrained_weights() -> dict[str, torch.Tensor]:
    return _ref().head_weights(_recipe().untrained_model())


@functools.lru_cache(maxsize=2)
def proof_weights(which: str) -> dict[str, torch.Tensor]:
    """The float64 weights of the shipped (``trained``) or the ``untrained`` model."""
    return _recipe().weights_from_checkpoint(torch.float64) if which == "trained" else untrained_weights()


@functools.lru_cache(maxsize=2)
def proof_results(which: str):
    """Every strategy's result on the shipped (``trained``) or the ``untrained`` model."""
    from mechinterp_edu.lessons.max_of_k.proofs import all_proofs

    return all_proofs(proof_weights(which))


def _by_kind(results) -> dict[str, object]:
    return {"brute": results[0], "cubic": results[1], "residual": results[2], "sigma2": results[3],
            "nostructure": results[4]}


@functools.lru_cache(maxsize=1)
def facts() -> dict[str, object]:
    ref = _ref()
    w = _recipe().weights_from_checkpoint(torch.float64)
    c = ref.circuits(*(w[k] for k in ref.WEIGHT_NAMES))
    V, n = c.d_vocab, c.n_ctx
    out: dict[str, object] = {"n_inputs": V ** n, "d_vocab": V, "n_ctx": n}

    # reading the tables
    steps = c.EQKE.diff(dim=1)                                        # [query, key - 1]
    out["eqke_rise_fraction"] = float((steps > 0).double().mean())
    down = steps <= 0
    out["low_keys"] = LOW_KEYS
    out["down_steps_low"] = int(down[:, : LOW_KEYS - 1].sum())
    out["down_steps_high"] = int(down[:, LOW_KEYS - 1:].sum())
    out["rows_rising_high"] = int((~down[:, LOW_KEYS - 1:]).all(dim=1).sum())
    out["eqke_max"] = float(c.EQKE.abs().max())
    out["eqkp_max"] = float(c.EQKP.abs().max())
    out["evou_diagonal_rows"] = round(ref.copying_diagonal_fraction(c.EVOU) * V)
    out["eu_diagonal_rows"] = round(ref.copying_diagonal_fraction(c.EU) * V)
    S = torch.linalg.svdvals(c.EQKE)
    ratio, v, u = ref.eqke_rank_one(c.EQKE)
    out.update(sigma1=float(S[0]), sigma2=float(S[1]), sigma_ratio=ratio,
               rank_one_share=float(S[0] ** 2 / (S ** 2).sum()),
               size_corr=ref.correlation(v, torch.arange(V, dtype=torch.float64)),
               query_spread=float(u.max() / u.min()))

    # brute force (the float32 reference sweep; the proofs' float64 one agrees, tests check it)
    brute = ref.brute_force(c, device="cpu")
    out.update(n_correct=brute.n_correct, n_wrong=brute.n_wrong, accuracy=brute.accuracy,
               wrong_gap_0_2=sum(brute.errors_by_gap[:3]),
               max_wrong_gap=max(g for g, e in enumerate(brute.errors_by_gap) if e))

    # the proofs, shipped and untrained
    for label, which in (("", "trained"), ("untrained_", "untrained")):
        r = _by_kind(proof_results(which))
        for key, res in r.items():
            out[f"{label}{key}_bound"] = res.bound
            out[f"{label}{key}_flops"] = res.flops
            out[f"{label}{key}_certified"] = res.n_certified
    short = [out[f"untrained_{k}_certified"] for k in ("cubic", "residual", "sigma2", "nostructure")]
    out["untrained_short_max_certified"] = max(short)
    out["untrained_short_max_bound"] = max(short) / out["n_inputs"]
    r = _by_kind(proof_results("trained"))
    out["rho"] = r["residual"].detail["rho"]
    out["two_rho"] = 2 * r["residual"].detail["rho"]
    out["cubic_groups"] = r["cubic"].detail["certified_groups"]
    from mechinterp_edu.lessons.max_of_k.proofs_cubic import uncertified_by_gap
    left = uncertified_by_gap(r["cubic"], V, n)
    out["small_gap"] = SMALL_GAP
    out["cubic_left_small_gap"] = sum(left[: SMALL_GAP + 1]) / sum(left)
    out["brute_over_cubic"] = r["brute"].flops / r["cubic"].flops
    out["cubic_over_residual"] = r["cubic"].flops / r["residual"].flops
    out["cubic_gap_to_accuracy"] = out["accuracy"] - out["cubic_bound"]
    out["sqrt_d_head"] = math.sqrt(w["W_Q"].shape[1])
    out["d_head"] = int(w["W_Q"].shape[1])
    out["inv_sqrt_d_head"] = 1 / math.sqrt(w["W_Q"].shape[1])
    from mechinterp_edu.lessons.max_of_k.bug_lab import buggy_circuits

    args = [w[k] for k in ref.WEIGHT_NAMES]
    for key, bug, table in (("drop_pos", "drop_query_pos", "EQKE"), ("raw_pos", "raw_pos_in_eqkp", "EQKP")):
        seen = getattr(buggy_circuits(*args, bugs=(bug,)), table)
        true = getattr(c, table)
        out[f"{key}_max_factor"] = float(seen.abs().max() / true.abs().max())
        out[f"{key}_std_factor"] = float(seen.std() / true.std())
    from mechinterp_edu.lessons.max_of_k.paper_figures import PAPER_N_MODELS
    out["paper_n_models"] = PAPER_N_MODELS
    out.update(bug_lab_facts())
    return out


@functools.lru_cache(maxsize=1)
def bug_lab_facts() -> dict[str, object]:
    """Accuracy on max of the bug-lab models (from their checkpoints) and the EQKE factor of the
    sqrt(d) trainer, read correctly."""
    from mechinterp_edu.lessons.max_of_k.bug_models import bug_weights

    ref = _ref()
    w = _recipe().weights_from_checkpoint(torch.float64)
    good = ref.circuits(*(w[k] for k in ref.WEIGHT_NAMES))
    out = {}
    for key, bugs in (("last_token", ("last_token_target",)), ("sqrt_d", ("sqrt_d_multiplier",))):
        bw = bug_weights(bugs)
        c = ref.circuits(*(bw[k] for k in ref.WEIGHT_NAMES))
        out[f"bug_{key}_accuracy"] = ref.brute_force(c, device="cpu").accuracy
        out[f"bug_{key}_eu_diagonal"] = ref.copying_diagonal_fraction(c.EU)
        out[f"bug_{key}_eqke_factor"] = float(c.EQKE.abs().max() / good.EQKE.abs().max())
    return out
