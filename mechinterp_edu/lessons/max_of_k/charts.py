"""Lesson 4 live charts: the max-of-4 model's circuit tables, their SVD, checks against the
model's own forward pass, the brute-force accuracy, the derivation verdicts and the bug lab.

Controls (see the lesson's front matter): ``model`` (max_of_4 | untrained), ``scale``
(per family | per table), ``query_token``, ``prompt``, one bool per bug
(``bug_divide_by_d_head``, ``bug_drop_query_pos``, ``bug_raw_pos_in_eqkp``,
``bug_last_token_target``, ``bug_sqrt_d_multiplier``) and ``lab_steps``.
"""
from __future__ import annotations

import functools
from typing import Any

import altair as alt
import pandas as pd
import torch

from mechinterp_edu.charts import bar, heatmap, line
from mechinterp_edu.live.registry import LiveChart, chart_decorator
from mechinterp_edu.lessons.max_of_k import bug_lab as lab
from mechinterp_edu.lessons.max_of_k import reference as ref

CHARTS: list[LiveChart] = []
live_chart = chart_decorator(CHARTS)

MODELS = ("max_of_4", "untrained")
PANEL = 240               # px: the side of a 64 x 64 heatmap panel
CIRCUIT_BUG_CONTROLS = {f"bug_{name}": name for name in lab.CIRCUIT_BUGS}
TRAINING_BUG_CONTROLS = {f"bug_{name}": name for name in lab.TRAINING_BUGS}


# --------------------------------------------------------------------------- models and tables
@functools.lru_cache(maxsize=4)
def _model(name: str):
    if name == "untrained":
        from mechinterp_edu.lessons.max_of_k.model import untrained_model
        return untrained_model().to("cpu").eval()
    from mechinterp_edu.models.zoo import load_model
    return load_model(name, device="cpu")


@functools.lru_cache(maxsize=8)
def _lab_model(bugs: tuple[str, ...], steps: int):
    """A model trained by the recipe with the given training bugs: the shipped checkpoints for the
    recipe's step count (instant), a fresh training run otherwise (cached)."""
    from mechinterp_edu.lessons.max_of_k.bug_models import load_bug_model
    from mechinterp_edu.lessons.max_of_k.model import RECIPE, train
    if steps == RECIPE["steps"]:
        return _model("max_of_4") if not bugs else load_bug_model(bugs)   # the checkpoints are these runs
    return train(steps=steps, device="cpu", progress=False, bugs=bugs, evaluate_model=False).model


def _model_name(ctx: dict[str, Any]) -> str:
    name = str(ctx.get("model") or "max_of_4")
    return name if name in MODELS else "max_of_4"


@functools.lru_cache(maxsize=16)
def _tables_of(model) -> ref.Circuits:
    return ref.circuits_of(model, dtype=torch.float64, device="cpu")


@functools.lru_cache(maxsize=8)
def _brute(model) -> ref.BruteForceResult:
    return ref.brute_force(_tables_of(model), device="cpu")


def _labels(n: int) -> list[str]:
    return [str(i) for i in range(n)]


def _parse_prompt(ctx: dict[str, Any], d_vocab: int, n_ctx: int) -> tuple[torch.Tensor | None, str]:
    text = str(ctx.get("prompt") or "").replace(",", " ").split()
    try:
        values = [int(t) for t in text]
    except ValueError:
        return None, (f"The prompt must be {n_ctx} whole numbers between 0 and {d_vocab - 1} separated by "
                      f"spaces, e.g. `12 40 7 33`; got `{ctx.get('prompt')}`.")
    if len(values) != n_ctx or any(v < 0 or v >= d_vocab for v in values):
        return None, (f"The prompt must be exactly {n_ctx} tokens, each between 0 and {d_vocab - 1}; got "
                      f"{len(values)} value(s): `{ctx.get('prompt')}`.")
    return torch.tensor([values]), ""


def _query_token(ctx: dict[str, Any], d_vocab: int) -> int:
    try:
        return max(0, min(d_vocab - 1, int(ctx.get("query_token", 40))))
    except (TypeError, ValueError):
        return 40


# --------------------------------------------------------------------------- the heatmap grid
_AXES = {
    "EQKE": ("key token", "query token"),
    "EQKP": ("key position", "query token"),
    "EU": ("output logit", "query token"),
    "EVOU": ("output logit", "attended token"),
    "PVOU": ("output logit", "attended position"),
}
_FAMILY = {"EQKE": "QK (attention scores)", "EQKP": "QK (attention scores)",
           "EU": "logits", "EVOU": "logits", "PVOU": "logits"}


def _grid(c: ref.Circuits, per_table: bool, title_suffix: str = "",
          domains: dict[str, float] | None = None) -> tuple[alt.VConcatChart, dict[str, float]]:
    tables = dict(zip(ref.NAMES, c.as_tuple()))
    family_max: dict[str, float] = {}
    for name, t in tables.items():
        family_max[_FAMILY[name]] = max(family_max.get(_FAMILY[name], 0.0), float(t.abs().max()))
    used: dict[str, float] = {}
    charts = []
    for name, t in tables.items():
        m = float(t.abs().max())
        if domains is not None:
            dom = domains[name]
        else:
            dom = m if per_table else family_max[_FAMILY[name]]
        used[name] = dom or 1.0
        x_title, y_title = _AXES[name]
        rows, cols = t.shape
        charts.append(heatmap(t, title=f"{name}{title_suffix}  (max |entry| {m:.3g}; ±{dom:.3g})",
                              x_labels=_labels(cols), y_labels=_labels(rows), x_title=x_title, y_title=y_title,
                              width=max(40, min(PANEL, 4 * cols)), height=max(40, min(PANEL, 4 * rows)),
                              domain_max=dom or 1.0))
    # Rows of at most two panels of PANEL px (about 650 px with axes and legends): the grid fits
    # a 1440 px screen next to the sidebar. EQKE | EQKP, then EU | EVOU, then PVOU.
    rows_of = [alt.hconcat(*charts[:2]), alt.hconcat(*charts[2:4]), charts[4]]
    return alt.vconcat(*rows_of), used


@live_chart("max_of_k.circuit_grid", "EQKE, EQKP, EU, EVOU and PVOU",
            "The five tables of the last position. With 'per family' the two score tables share one "
            "colour scale and the three logit tables another, so a small table looks small.")
def circuit_grid(ctx: dict[str, Any]):
    name = _model_name(ctx)
    c = _tables_of(_model(name))
    per_table = str(ctx.get("scale", "per family")) == "per table"
    chart, _ = _grid(c, per_table, title_suffix=f" [{name}]")
    note = ("Colour scales: one per table (each table's own maximum)." if per_table else
            "Colour scales: EQKE and EQKP share one (score units); EU, EVOU and PVOU share another (logit units).")
    return [note, chart]


@live_chart("max_of_k.eqke_rows", "EQKE rows: scores rise with the key token",
            "Rows of EQKE for a few query tokens (lines), and the attention one query gives each key "
            "token when the other three positions hold token 0.")
def eqke_rows(ctx: dict[str, Any]):
    c = _tables_of(_model(_model_name(ctx)))
    q = _query_token(ctx, c.d_vocab)
    keys = torch.arange(c.d_vocab)
    picks = sorted({0, c.d_vocab // 3, 2 * c.d_vocab // 3, c.d_vocab - 1, q})
    rows = line(keys, {f"query {p}": c.EQKE[p] for p in picks}, title="EQKE[query, key] against the key token",
                x_title="key token", y_title="score")
    increasing = float((c.EQKE.diff(dim=1) > 0).double().mean())
    return [rows, {"fraction of neighbouring key pairs where the score rises": round(increasing, 4),
                   "EQKP max |entry|": float(c.EQKP.abs().max()),
                   "EQKE max |entry|": float(c.EQKE.abs().max())}]


# --------------------------------------------------------------------------- SVD view
@live_chart("max_of_k.svd", "EQKE is nearly rank one",
            "Singular values of EQKE (log scale), the size direction (first right singular vector, "
            "over key tokens) and the query direction (first left singular vector).")
def svd_view(ctx: dict[str, Any]):
    c = _tables_of(_model(_model_name(ctx)))
    S = torch.linalg.svdvals(c.EQKE)
    ratio, v, u = ref.eqke_rank_one(c.EQKE)
    index = torch.arange(c.d_vocab, dtype=torch.float64)
    k = min(12, S.shape[0])
    sv = pd.DataFrame({"index": list(range(1, k + 1)), "singular value": S[:k].tolist()})
    # Points joined by a line: a bar on a log axis starts at 0 = -infinity and draws nothing.
    sv_chart = (alt.Chart(sv, title="singular values of EQKE (log scale)").mark_line(point=True)
                .encode(x=alt.X("index:O", title="i"), y=alt.Y("singular value:Q", scale=alt.Scale(type="log")),
                        tooltip=["index", alt.Tooltip("singular value:Q", format=".4g")])
                .properties(width=360, height=220))
    directions = line(index, {"size direction v (keys)": v, "query direction u (queries)": u},
                      title="first singular vectors (signs: v rises with the token; EQKE ~ sigma1 u v^T)",
                      x_title="token", y_title="component")
    metrics = {"sigma1": float(S[0]), "sigma2": float(S[1]), "sigma1 / sigma2": ratio,
               "corr(size direction, token index)": ref.correlation(v, index),
               "query direction: min / max (nearly constant?)": float(u.min() / u.max()),
               "share of EQKE's squared norm in the rank-one part": float(S[0] ** 2 / (S ** 2).sum())}
    return [metrics, sv_chart, directions]


# --------------------------------------------------------------------------- checks against the model
@live_chart("max_of_k.scores_check", "EQKE + EQKP against the model's own scores",
            "For the prompt: the model's pre-softmax scores at the last position (from hook_q and "
            "hook_k), the table lookups, and the last-position logits both ways.")
def scores_check(ctx: dict[str, Any]):
    model = _model(_model_name(ctx))
    c = _tables_of(model)
    tokens, problem = _parse_prompt(ctx, c.d_vocab, c.n_ctx)
    if tokens is None:
        return problem
    model_scores = ref.model_last_scores(model, tokens)[0].double()
    x_q = int(tokens[0, -1])
    frame = pd.DataFrame({
        "position": list(range(c.n_ctx)),
        "token": tokens[0].tolist(),
        "EQKE[x_q, x_i]": c.EQKE[x_q, tokens[0]].tolist(),
        "EQKP[x_q, i]": c.EQKP[x_q].tolist(),
        "table score": (c.EQKE[x_q, tokens[0]] + c.EQKP[x_q]).tolist(),
        "model score (hook_q, hook_k)": model_scores.tolist(),
    })
    frame["difference"] = frame["table score"] - frame["model score (hook_q, hook_k)"]
    frame["attention"] = torch.softmax(torch.tensor(frame["table score"].values), -1).tolist()
    logits_model = ref.model_last_logits(model, tokens)[0].double()
    logits_tables = ref.logits_from_tables(tokens, c)[0]
    metrics = {"max |score difference|": float(frame["difference"].abs().max()),
               "max |logit difference|": float((logits_model - logits_tables).abs().max()),
               "model's answer": int(logits_model.argmax()), "max token": int(tokens.max())}
    return [metrics, frame]


@live_chart("max_of_k.brute_force", "Accuracy on every input, and where the errors are",
            "All d_vocab^n_ctx inputs, evaluated from the circuit tables in float32 chunks; errors by the "
            "gap between the largest and the second-largest token.")
def brute_force_chart(ctx: dict[str, Any]):
    model = _model(_model_name(ctx))
    result = _brute(model)
    gaps = [g for g in range(len(result.totals_by_gap)) if result.totals_by_gap[g]]
    shown = [g for g in gaps if g <= 20]
    rate = [result.errors_by_gap[g] / result.totals_by_gap[g] for g in shown]
    metrics = {"inputs": result.n_inputs, "correct": result.n_correct, "wrong": result.n_wrong,
               "accuracy": round(result.accuracy, 8), "seconds (this machine, CPU)": round(result.seconds, 3)}
    chart = bar(rate, [str(g) for g in shown], title="error rate by gap (largest - second largest)",
                x_title="gap", y_title="fraction wrong")
    counts = pd.DataFrame({"gap": shown, "inputs": [result.totals_by_gap[g] for g in shown],
                           "wrong": [result.errors_by_gap[g] for g in shown]})
    examples = pd.DataFrame(result.wrong_examples[:10].tolist(),
                            columns=[f"t{i}" for i in range(result.wrong_examples.shape[1])]) \
        if result.wrong_examples.numel() else "No input is answered wrongly."
    return [metrics, chart, counts, "A few inputs it gets wrong:", examples]


# --------------------------------------------------------------------------- derivation
@live_chart("max_of_k.notes_steps", "The notes' steps, checked",
            "Each step of the notes that does not hold, with sympy's verdict (each one fails).")
def notes_steps(ctx: dict[str, Any]):
    from mechinterp_edu.derivations.framework import check
    from mechinterp_edu.lessons.max_of_k.derivations import FALSE_STEPS
    return check(FALSE_STEPS)


# --------------------------------------------------------------------------- bug lab
def _lab_steps(ctx: dict[str, Any]) -> int:
    from mechinterp_edu.lessons.max_of_k.model import RECIPE
    try:
        return max(100, min(6000, int(ctx.get("lab_steps", RECIPE["steps"]))))
    except (TypeError, ValueError):
        return RECIPE["steps"]


def _on(ctx: dict[str, Any], controls: dict[str, str]) -> tuple[str, ...]:
    return tuple(sorted(bug for key, bug in controls.items() if bool(ctx.get(key))))


def bug_lab_state(ctx: dict[str, Any]) -> dict[str, Any]:
    """The numbers the bug lab shows (also used by the tests)."""
    steps = _lab_steps(ctx)
    circuit_bugs = _on(ctx, CIRCUIT_BUG_CONTROLS)
    training_bugs = _on(ctx, TRAINING_BUG_CONTROLS)
    good_model = _model("max_of_4")                  # the expected picture: the shipped model
    lab_model = _lab_model(training_bugs, steps)
    good = _tables_of(good_model)
    w = ref.head_weights(lab_model, dtype=torch.float64, device="cpu")
    seen = lab.buggy_circuits(*(w[k] for k in ref.WEIGHT_NAMES), bugs=circuit_bugs)
    honest = ref.circuits(*(w[k] for k in ref.WEIGHT_NAMES))
    gen = torch.Generator().manual_seed(0)
    tokens = torch.randint(0, good.d_vocab, (2048, good.n_ctx), generator=gen)
    logit_change = float((ref.logits_from_tables(tokens, seen) - ref.logits_from_tables(tokens, honest)).abs().max())
    return {
        "circuit_bugs": circuit_bugs, "training_bugs": training_bugs, "steps": steps,
        "good": good, "seen": seen,
        "EQKE ratio": float(seen.EQKE.abs().max() / good.EQKE.abs().max()),
        "EQKP ratio": float(seen.EQKP.abs().max() / good.EQKP.abs().max()),
        "EU diagonal (lab)": ref.copying_diagonal_fraction(seen.EU),
        "EU diagonal (correct)": ref.copying_diagonal_fraction(good.EU),
        "EVOU diagonal (lab)": ref.copying_diagonal_fraction(seen.EVOU),
        "logit change from the circuit bugs": logit_change,
        "accuracy on max (lab model)": _brute(lab_model).accuracy,
    }


@live_chart("max_of_k.bug_lab", "Bug lab: switch each bug on and watch its symptom",
            "Left: what the notes' tools would show with the chosen bugs; right: the correct tables of the "
            "shipped, correctly trained model, on the same colour scales.")
def bug_lab(ctx: dict[str, Any]):
    state = bug_lab_state(ctx)
    on = list(state["circuit_bugs"]) + list(state["training_bugs"])
    heading = ("**Bugs on:** " + "; ".join({**lab.CIRCUIT_BUGS, **lab.TRAINING_BUGS}[b] for b in on)
               if on else "**No bug on:** both sides show the correct picture.")
    metrics = {
        "EQKE size vs correct (max |entry| ratio)": round(state["EQKE ratio"], 4),
        "EQKP size vs correct (max |entry| ratio)": round(state["EQKP ratio"], 4),
        "EU rows peaking on the diagonal (lab / correct)":
            f"{state['EU diagonal (lab)']:.2f} / {state['EU diagonal (correct)']:.2f}",
        "EVOU rows peaking on the diagonal (lab)": round(state["EVOU diagonal (lab)"], 3),
        "max |logit change| caused by the circuit bugs": f"{state['logit change from the circuit bugs']:.3g}",
        "lab model's accuracy on max (all inputs)": round(state["accuracy on max (lab model)"], 6),
        "training steps": state["steps"],
    }
    _, domains = _grid(state["good"], per_table=False)
    lab_chart, _ = _grid(state["seen"], per_table=False, title_suffix=" (lab)", domains=domains)
    good_chart, _ = _grid(state["good"], per_table=False, title_suffix=" (correct)", domains=domains)
    # One above the other (not side by side): each grid is already as wide as the page allows.
    return [heading, metrics, lab_chart, good_chart]


# The compact proofs' charts (lesson 4, part 7) live with the proofs.
from mechinterp_edu.lessons.max_of_k.charts_proofs import CHARTS as _PROOF_CHARTS  # noqa: E402

CHARTS.extend(_PROOF_CHARTS)

__all__ = ["bug_lab_state", "MODELS"]
