"""Numbers that lesson 3's text states (``{{name}}`` placeholders), computed here from the
planted language's recipe and the shipped ``skip_trigrams`` checkpoint.

Each fact is asserted by ``tests/test_lesson_facts.py`` against an independent computation
(the model's forward pass with a head ablated, a hand-written forward pass, the worked
solutions' step-by-step scores).
"""
from __future__ import annotations

import functools

import torch

BUG_CONTEXTS = 256        # random filler contexts for the keep ... in measurements
BUG_SEED = 3


@functools.lru_cache(maxsize=1)
def facts() -> dict[str, object]:
    from mechinterp_edu.lessons.skip_trigrams import model as st
    from mechinterp_edu.models.zoo import load_model
    from mechinterp_edu.lessons.skip_trigrams.reference import recovery_rate

    model = load_model("skip_trigrams", device="cpu")
    found = st.recovered(model)
    intruders = [t for t in found if t not in st.PLANTED]
    bay = st.TOKEN_ID["bay"]
    lifts = st.head_lifts(model, "keep", "in", n=BUG_CONTEXTS, seed=BUG_SEED)[:, bay]     # [head]
    bug_head, repair_head = int(lifts.argmax()), int(lifts.argmin())
    p_bay = p_bay_without_heads(model, BUG_CONTEXTS, BUG_SEED)
    return {
        "d_vocab": len(st.VOCAB),
        "n_triples": len(st.VOCAB) ** 3,
        "n_fillers": len(st.FILLERS),
        "n_a_tokens": len(st.A_TOKENS),
        "n_b_tokens": len(st.B_TOKENS),
        "n_c_tokens": len(st.C_TOKENS),
        "n_planted": len(st.PLANTED),
        "eval_sequences": int(st.RECIPE["eval_sequences"]),
        "planted_accuracy": float(st.planted_accuracy(model)),
        "n_recovered": len(found) - len(intruders),
        "recovery_rate": float(recovery_rate(found, st.PLANTED)),
        "intruders": ", ".join(f"`{st.trigram_names(t)}`" for t in intruders) or "none",
        "bug_contexts": BUG_CONTEXTS,
        "bug_head": bug_head,
        "repair_head": repair_head,
        "bug_lift": float(lifts[bug_head]),
        "p_bay_all_heads": p_bay["all heads"],
        "p_bay_without_repair": p_bay[f"without head {repair_head}"],
    }


@torch.no_grad()
def p_bay_without_heads(model, n: int, seed: int) -> dict[str, float]:
    """Mean P(bay) after keep ... in with all heads, and with one head's output subtracted."""
    from mechinterp_edu.lessons.skip_trigrams import model as st

    with_keep, _ = st.bug_contexts(n, seed, "keep", "in")
    logits, cache = model.run_with_cache(with_keep, names_filter=lambda name: name.endswith("hook_z"))
    w = st.model_weights(model)
    z = cache["blocks.0.attn.hook_z"][:, -1].double()
    per_head = torch.einsum("nhd,hdm,mv->nhv", z, w["W_O"].double(), w["W_U"].double())
    final = logits[:, -1].double()
    bay = st.TOKEN_ID["bay"]
    out = {"all heads": float(final.softmax(-1)[:, bay].mean())}
    for h in range(per_head.shape[1]):
        out[f"without head {h}"] = float((final - per_head[:, h]).softmax(-1)[:, bay].mean())
    return out
