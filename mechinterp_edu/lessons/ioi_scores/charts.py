"""Lesson 5 live charts: one head's END -> IO attention score, decomposed and checked live.

Controls (see the lesson's front matter): ``model`` (ioi_small | gpt2_small), ``head``
("auto" or "L.H"), ``target`` (IO | S2: the key position whose score is decomposed; the
baseline is always S1), ``batch`` (prompts), ``seed`` and ``split`` (test | heldout_template |
train). GPT-2 small is used only where its weights can be reached; otherwise one sentence says
so and the toy model is used.

Every chart computes from one forward pass with cache; every decomposition it shows is checked
against the model's own score (from hook_q and hook_k) in :func:`sum_check`. Models live on the
course device (:func:`mechinterp_edu.device.get_device`), so the decompositions run on the GPU
when there is one; charts move their numbers to the CPU.
"""
from __future__ import annotations

import contextlib
import functools
import io
import math
from dataclasses import dataclass
from typing import Any, Optional

import altair as alt
import pandas as pd
import torch

from mechinterp_edu.charts import bar, heatmap, histogram
from mechinterp_edu.live.inputs import InputProblem, with_setup_from
from mechinterp_edu.live.registry import LiveChart, chart_decorator
from mechinterp_edu.lessons.ioi_scores import data as ioi_data
from mechinterp_edu.lessons.ioi_scores import nulls
from mechinterp_edu.lessons.ioi_scores import reference as ref

CHARTS: list[LiveChart] = []
live_chart = chart_decorator(CHARTS)

MODELS = ("ioi_small", "gpt2_small")
TARGETS = ("IO", "S2")
SPLITS = ioi_data.SPLITS
GPT2_DEFAULT_HEAD = (10, 7)


# --------------------------------------------------------------------------- models and data
@functools.lru_cache(maxsize=4)
def _model(name: str) -> tuple[Any, str]:
    """(model, note): note is "" or the one sentence saying GPT-2 small is out of reach."""
    from mechinterp_edu.device import get_device

    note = ""
    if name == "gpt2_small":
        from mechinterp_edu.models.gpt2 import GPT2Unavailable, load_gpt2_small
        try:
            with contextlib.redirect_stdout(io.StringIO()):
                return load_gpt2_small(device=get_device()), ""
        except GPT2Unavailable as exc:
            note = str(exc)
    from mechinterp_edu.models.zoo import CheckpointError, load_model
    if name not in ("ioi_small", "gpt2_small"):       # another zoo model with a word vocabulary
        try:
            with contextlib.redirect_stdout(io.StringIO()):
                other = load_model(name, device=get_device())
            vocab = getattr(other, "ioi_vocab", None)
            if vocab is not None and set(ioi_data.build_vocab()) <= set(vocab.words):
                return other, ""
            note = (f"The model {name} does not read IOI prompts (its vocabulary lacks the IOI "
                    "sentences' words); the page uses ioi_small.")
        except (CheckpointError, KeyError, ValueError) as exc:
            note = f"The model {name} cannot be loaded here ({exc}); the page uses ioi_small."
    with contextlib.redirect_stdout(io.StringIO()):   # the bridge prints device/dtype moves
        return load_model("ioi_small", device=get_device()), note


def _encode(model, prompts):
    if getattr(model, "ioi_vocab", None) is not None:
        return ioi_data.encode_prompts(prompts, model.ioi_vocab)
    from mechinterp_edu.models.gpt2 import gpt2_encode_word
    tok = model.tokenizer
    return ioi_data.encode_with_tokenizer(prompts, gpt2_encode_word(model), bos_id=tok.bos_token_id)


@dataclass
class Setup:
    model: Any
    model_label: str
    note: str
    batch: ioi_data.IOIBatch
    cache: Any
    inp: ref.HeadScoreInputs
    parts: dict[str, torch.Tensor]
    grid_raw: torch.Tensor
    grid_base: torch.Tensor
    layer: int
    head: int
    target: str
    notes: tuple[str, ...] = ()   # shown above each chart (none here: the GPT-2 note is in the header)


def _int(ctx, key, default, lo, hi) -> int:
    try:
        return max(lo, min(hi, int(ctx.get(key, default))))
    except (TypeError, ValueError):
        return default


def _params(ctx: dict[str, Any]) -> tuple[str, str, str, int, int, str]:
    model = str(ctx.get("model") or "ioi_small")
    model = model if model in MODELS or _in_zoo(model) else "ioi_small"
    target = str(ctx.get("target") or "IO")
    target = target if target in TARGETS else "IO"
    split = str(ctx.get("split") or "test")
    split = split if split in SPLITS else "test"
    return (model, str(ctx.get("head") or "auto").strip(), target, _int(ctx, "batch", 64, 1, 512),
            _int(ctx, "seed", 0, 0, 10**6), split)


def _in_zoo(name: str) -> bool:
    from mechinterp_edu.models.zoo import list_models
    return any(spec.name == name for spec in list_models())


class HeadChoiceError(InputProblem):
    """The head control names no head of the model; the message says how to write one."""


def _parse_head(text: str, model, cache, batch, target) -> tuple[int, int]:
    n_layers, n_heads = model.cfg.n_layers, model.cfg.n_heads
    if text.lower() == "auto":
        if getattr(model, "ioi_vocab", None) is None and n_layers == 12:
            return GPT2_DEFAULT_HEAD
        return _strongest_head(model, cache, batch, target)
    try:
        layer_text, head_text = text.replace(" ", "").split(".")
        layer, head = int(layer_text), int(head_text)
    except ValueError:
        raise HeadChoiceError(f"Write the head as layer.head, e.g. `2.2` (or `auto`); got `{text}`.") from None
    if not (0 <= layer < n_layers and 0 <= head < n_heads):
        raise HeadChoiceError(f"This model has layers 0-{n_layers - 1} and heads 0-{n_heads - 1}; "
                              f"`{text}` is not one of its heads.")
    return layer, head


def _strongest_head(model, cache, batch, target) -> tuple[int, int]:
    """The head (layer >= 1) whose mean net score difference END->target minus END->S1 is largest."""
    best, best_val = (model.cfg.n_layers - 1, 0), -math.inf
    rows = torch.arange(len(batch))
    d_head = model.cfg.d_head
    for layer in range(1, model.cfg.n_layers):
        q = cache[f"blocks.{layer}.attn.hook_q"][rows, batch.positions["END"]].double()
        k = cache[f"blocks.{layer}.attn.hook_k"].double()
        net = ((q * (k[rows, batch.positions[target]] - k[rows, batch.positions["S1"]])).sum(-1)
               / math.sqrt(d_head)).mean(0)
        for head in range(model.cfg.n_heads):
            if float(net[head]) > best_val:
                best, best_val = (layer, head), float(net[head])
    return best


@functools.lru_cache(maxsize=8)
def _setup(model_name: str, head_text: str, target: str, n: int, seed: int, split: str) -> Setup:
    model, note = _model(model_name)
    label = ("GPT-2 small" if getattr(model, "ioi_vocab", None) is None
             else f"{getattr(model, 'zoo_name', None) or 'ioi_small'} (toy)")
    batch = _encode(model, ioi_data.sample_prompts(n, split, seed=seed))
    cache = ref.run_with_cache(model, batch.tokens)
    batch = batch.to(cache["hook_embed"].device)
    layer, head = _parse_head(head_text, model, cache, batch, target)
    inp = ref.gather_head_inputs(model, batch, layer, head, target=target, baseline="S1", cache=cache)
    grids = ref.score_grids(inp)
    return Setup(model, label, note, batch, cache, inp, ref.decompose_all(inp),
                 grids["grid_raw"], grids["grid_base"], layer, head, target)


def setup(ctx: dict[str, Any]) -> Setup:
    """The page's controls -> one cached forward pass and every decomposition of the chosen head."""
    return _setup(*_params(ctx))


with_setup = with_setup_from(setup)


def _header(s: Setup) -> str:
    """One line naming model, head and prompts; the GPT-2 notice is shown once, by model_status."""
    return (f"**{s.model_label}**, head **{s.layer}.{s.head}**, score END -> **{s.target}** "
            f"(baseline: END -> S1), {len(s.batch)} prompts.")


# --------------------------------------------------------------------------- panels
def _panel(values: torch.Tensor, s: Setup, title: str, bias_label: str,
           domain_max: Optional[float] = None) -> alt.HConcatChart | alt.Chart:
    """A component vector [n+1] as a layer x head heatmap (+ an MLP column) and a bar of the rest."""
    values = values.detach().double().cpu()
    inp = s.inp
    n_heads = s.model.cfg.n_heads
    dom = domain_max if domain_max is not None else float(values.abs().max()) or 1.0
    direct_labels = ["embed", "pos_embed", "b_O (all layers)", bias_label]
    direct_vals = [values[inp.labels.index(l)] if l in inp.labels else values[-1] for l in direct_labels[:3]]
    direct_vals.append(values[-1])
    direct = bar(torch.stack(direct_vals), direct_labels, title=f"{title}: direct terms and bias",
                 width=220, height=200)
    if s.layer == 0:
        return direct
    grid = torch.zeros(s.layer, n_heads + 1, dtype=torch.float64)
    for i, (label, kind) in enumerate(zip(inp.labels, inp.kinds)):
        if kind == "head":
            l, h = (int(x) for x in label.split("."))
            grid[l, h] = values[i]
        elif kind == "mlp":
            grid[int(label[3:]), n_heads] = values[i]
    hm = heatmap(grid, title=title, x_labels=[f"H{h}" for h in range(n_heads)] + ["MLP"],
                 y_labels=[f"L{l}" for l in range(s.layer)], x_title="head (and the layer's MLP)",
                 y_title="layer", width=min(420, 30 * (n_heads + 1)), height=min(320, 30 * s.layer + 20),
                 domain_max=dom)
    return alt.hconcat(hm, direct)


def _mean(x: torch.Tensor) -> torch.Tensor:
    return x.mean(0)


# --------------------------------------------------------------------------- charts
@live_chart("ioi_scores.model_status", "Model, head and prompts",
            "Which model the page uses (GPT-2 small only when its weights can be reached) and how "
            "well the toy model does the task.")
@with_setup
def model_status(s: Setup):
    out: list[Any] = [(s.note + "\n\n" + _header(s)) if s.note else _header(s)]
    metrics = dict(getattr(s.model, "zoo_metrics", {}) or {})
    if metrics:
        out.append({"held-out pairs and fillers: accuracy": round(metrics.get("accuracy", float("nan")), 4),
                    "held-out template: accuracy": round(metrics.get("accuracy_heldout_template", float("nan")), 4),
                    "mean logit(IO) - logit(S), held out": round(metrics.get("logit_diff", float("nan")), 3)})
    return out


@live_chart("ioi_scores.prompts", "IOI prompts with their word positions",
            "The first prompts of the batch, with the positions of IO, S1, S2 and END "
            "(<bos> is position 0).")
@with_setup
def prompts(s: Setup):
    frame = pd.DataFrame(ioi_data.prompt_table(s.batch, limit=8))
    with torch.no_grad():
        logits = s.model(s.batch.tokens)[:, -1] if getattr(s.model, "ioi_vocab", None) else None
    if logits is not None:
        frame["model's answer"] = s.model.ioi_vocab.decode(logits.argmax(-1)[:8].tolist())
    return frame


@live_chart("ioi_scores.attention_to_names", "Where END attends, head by head",
            "Mean attention probability from END to IO, S1 and S2 for every head.")
@with_setup
def attention_to_names(s: Setup):
    rows = torch.arange(len(s.batch), device=s.batch.tokens.device)
    cfg = s.model.cfg
    charts = []
    for name in ("IO", "S1", "S2"):
        table = torch.zeros(cfg.n_layers, cfg.n_heads, dtype=torch.float64)
        for layer in range(cfg.n_layers):
            pat = s.cache[f"blocks.{layer}.attn.hook_pattern"][rows, :, s.batch.positions["END"]]
            table[layer] = pat[rows, :, s.batch.positions[name]].double().mean(0).cpu()
        charts.append(heatmap(table, title=f"END -> {name}", kind="prob",
                              x_labels=[f"H{h}" for h in range(cfg.n_heads)],
                              y_labels=[f"L{l}" for l in range(cfg.n_layers)], x_title="head", y_title="layer",
                              width=min(300, 28 * cfg.n_heads), height=min(300, 24 * cfg.n_layers)))
    return [_header(s), alt.hconcat(*charts)]


@live_chart("ioi_scores.projections", "How much of each output lies along W_U[IO]?",
            "For every query-side component at END: the fraction of its squared norm along W_U[IO], "
            "along W_U[IO] and W_U[S] together, the chance level k/d, and the wrong statistic "
            "(mean |cos|)^2 for comparison.")
@with_setup
def projections(s: Setup):
    inp = s.inp
    d = inp.u.shape[-1]
    both = torch.stack([inp.u, inp.u_s], 1)
    rows = []
    for i, label in enumerate(inp.labels):
        v = inp.q_components[:, i]
        if float(v.norm(dim=-1).min()) < 1e-9:
            continue
        par, _ = ref.project(v, inp.u)
        cos = par.norm(dim=-1) / v.norm(dim=-1)
        null = nulls.cos2_null(v, k=1)
        rows.append({"component": label,
                     "fraction along W_U[IO] (mean cos^2)": float(ref.fraction_explained(v, inp.u)),
                     "null: random direction, mean": null["mean"],
                     "null 95% band": f"{null['lo']:.4f} to {null['hi']:.4f}",
                     "fraction along W_U[IO], W_U[S]": float(ref.fraction_explained(v, both)),
                     "(mean |cos|)^2 (wrong)": float(cos.mean() ** 2),
                     "chance, 1 direction (1/d)": ref.chance_level(d, 1),
                     "chance, 2 directions (2/d)": ref.chance_level(d, 2)})
    return [f"d_model = {d}: a random direction holds 1/d = {1 / d:.4f} of the squared norm on average, "
            f"two hold 2/d = {2 / d:.4f} (not 1/d^2 = {1 / d ** 2:.2e}).", pd.DataFrame(rows)]


@live_chart("ioi_scores.linear_maps", "The score as a linear function, checked",
            "x . map + bias against the model's own score, with the other side frozen.")
@with_setup
def linear_maps(s: Setup):
    inp = s.inp
    real = inp.real_score()
    m_k, b_k = ref.score_linear_in_keys(inp.q, inp.W_K, inp.b_K, inp.scale_k)
    m_q, b_q = ref.score_linear_in_queries(inp.k, inp.W_Q, inp.b_Q, inp.scale_q)
    x_k, x_q = inp.extras["resid_k"], inp.extras["resid_end"]
    by_keys = (x_k * m_k).sum(-1) + b_k
    by_queries = (x_q * m_q).sum(-1) + b_q
    return [_header(s), {
        "max |x_key . map + bias - score|": float((by_keys - real).abs().max()),
        "max |x_END . map + bias - score|": float((by_queries - real).abs().max()),
        "mean score END -> target": float(real.mean()),
        "mean key-side bias term q . b_K / sqrt(d_head)": float(b_k.mean()),
        "mean query-side bias term k . b_Q / sqrt(d_head)": float(b_q.mean()),
    }]


@live_chart("ioi_scores.ln_recompute", "Frozen LayerNorm scale vs LayerNorm recomputed per component",
            "The key-side decomposition summed two ways, against the model's score; and the sympy "
            "verdict on the tempting false identity.")
@with_setup
def ln_recompute(s: Setup):
    from mechinterp_edu.derivations.framework import Derivation, check_step
    from mechinterp_edu.lessons.ioi_scores.derivations import FALSE_STEPS

    inp = s.inp
    real = inp.real_score()
    frozen = ref.key_side(inp).sum(-1)
    comps = inp.k_components
    centred = comps - comps.mean(-1, keepdim=True)
    own = centred / centred.pow(2).mean(-1, keepdim=True).add(ref.model_eps(inp)).sqrt()
    recomputed = (torch.einsum("bnd,de->bne", own, inp.W_K) * inp.q[:, None]).sum((-1, -2)) / math.sqrt(inp.d_head)
    recomputed = recomputed + (inp.q * inp.b_K).sum(-1) / math.sqrt(inp.d_head)
    step = FALSE_STEPS["recompute_per_component"]
    verdict = check_step(Derivation("ioi_scores.false_steps", "False steps", (step,), lesson=5), step)
    return [{"frozen scale: max |sum - score|": float((frozen - real).abs().max()),
             "recomputed per component: max |sum - score|": float((recomputed - real).abs().max()),
             "mean |score|": float(real.abs().mean())}, [verdict]]


def _decomposition(s: Setup, key: str, side: str) -> list[Any]:
    raw = _mean(s.parts[f"{key}_raw"])
    base = _mean(s.parts[f"{key}_base"])
    # one colour scale for the key- and the query-side panels, which the page compares
    dom = float(torch.cat([_mean(s.parts[f"{k}_{t}"]).abs() for k in ("keys", "queries")
                           for t in ("raw", "base")]).max()) or 1.0
    bias = "b_K term" if side == "key" else "b_Q term"
    totals = ref.expected_totals(s.inp)
    return [
        _header(s),
        {"mean score END -> target": float(totals["raw"].mean()),
         "mean net score (target - S1)": float(totals["base"].mean()),
         "per-prompt sd of the net score": float(totals["base"].std()),
         "max |sum of terms - score|": float(max((s.parts[f"{key}_raw"].sum(-1) - totals["raw"]).abs().max(),
                                                 (s.parts[f"{key}_base"].sum(-1) - totals["base"]).abs().max()))},
        _panel(raw, s, f"{side} side, score END -> {s.target}", bias, dom),
        _panel(base, s, f"{side} side, minus the S1 baseline", bias, dom),
    ]


@live_chart("ioi_scores.key_decomposition", "Key-side decomposition, with and without the baseline",
            "Mean contribution of each key-side component (query frozen). Same colour scale for both.")
@with_setup
def key_decomposition(s: Setup):
    return _decomposition(s, "keys", "key")


@live_chart("ioi_scores.query_decomposition", "Query-side decomposition, with and without the baseline",
            "Mean contribution of each query-side component (key frozen; with the baseline the key is "
            "k_target - k_S1).")
@with_setup
def query_decomposition(s: Setup):
    return _decomposition(s, "queries", "query")


@live_chart("ioi_scores.substitute_unembed", "Key side with W_U[IO] substituted for the query",
            "The query recomputed as if W_U[IO] were the whole residual stream at END, against the "
            "real keys, decomposed by key component.")
@with_setup
def substitute_unembed(s: Setup):
    inp = s.inp
    q_sub = ref.substituted_query(inp, inp.u)
    raw = _mean(ref.key_side(inp, False, q=q_sub))
    base = _mean(ref.key_side(inp, True, q=q_sub))
    dom = float(torch.cat([raw.abs(), base.abs()]).max()) or 1.0
    return [_header(s),
            {"mean substituted score (target)": float(raw.sum()), "mean substituted net score": float(base.sum()),
             "mean real net score": float(ref.expected_totals(inp)["base"].mean())},
            _panel(raw, s, "q = LN(W_U[IO]) W_Q + b_Q, score END -> target", "b_K term", dom),
            _panel(base, s, "q = LN(W_U[IO]) W_Q + b_Q, minus the S1 baseline", "b_K term", dom)]


@live_chart("ioi_scores.four_terms", "Four terms: q along W_U[IO] and k along MLP0",
            "The net (target - S1) score split by q ∥/⊥ W_U[IO] and k ∥/⊥ the MLP0 output at the key's "
            "own position, per key component and per query component, with each term's share.")
@with_setup
def four_terms(s: Setup):
    fk = s.parts["four_keys_base"]          # [b, 4, n+1]
    fq = s.parts["four_queries_base"]
    totals = fk.sum(-1)                      # [b, 4]
    shares = ref.share_explained(totals, torch.zeros_like(totals))
    d = s.inp.u.shape[-1]
    null = nulls.four_term_null(s.inp)
    table = pd.DataFrame({"term": list(ref.TERM_NAMES),
                          "mean value": totals.mean(0).tolist(),
                          "per-prompt sd": totals.std(0).tolist(),
                          "share of the net difference": shares.tolist(),
                          "null share: mean": [null[n]["mean"] for n in ref.TERM_NAMES],
                          "null share: 95% band": [f"{null[n]['lo']:.3g} to {null[n]['hi']:.3g}"
                                                   for n in ref.TERM_NAMES]})
    dom = float(torch.cat([_mean(fk).abs().flatten(), _mean(fq).abs().flatten()]).max()) or 1.0
    key_panels = [_panel(_mean(fk)[t], s, f"by key component: {ref.TERM_NAMES[t]}", "b_K term", dom)
                  for t in range(4)]
    query_panels = [_panel(_mean(fq)[t], s, f"by query component: {ref.TERM_NAMES[t]}", "b_Q term", dom)
                    for t in range(4)]
    return [_header(s),
            f"The null: the same shares with W_U[IO] and MLP0 replaced by random directions (d = {d}); "
            f"the (q∥)·(k∥) share then averages about 1/d^2 = {1 / d ** 2:.2e} but scatters far more widely.",
            table, alt.vconcat(*key_panels), alt.vconcat(*query_panels)]


@live_chart("ioi_scores.grid", "Every query component against every key component",
            "Mean contribution of each (query component, key component) pair to the net "
            "(target - S1) score; the bias row and column included. The grid sums to the score.")
@with_setup
def grid(s: Setup):
    g = _mean(s.grid_base)
    labels = s.inp.labels
    return [_header(s), {"sum of the grid (mean)": float(g.sum()),
                         "mean net score from hook_q, hook_k": float(ref.expected_totals(s.inp)["base"].mean())},
            heatmap(g, title="query component (rows) x key component (columns), minus baseline",
                    x_labels=labels + ["b_K"], y_labels=labels + ["b_Q"], x_title="key component",
                    y_title="query component", width="container",
                    height=max(240, min(900, 22 * (len(labels) + 1))))]


@live_chart("ioi_scores.histograms", "Swap one side: scores and probabilities",
            "One side frozen, the other replaced by each candidate vector (treated as the whole "
            "residual stream, LayerNorm recomputed on it).")
@with_setup
def histograms(s: Setup):
    inp = s.inp
    q_side = s.parts["queries_base"].mean(0)[:-1]
    heads = [i for i, k in enumerate(inp.kinds) if k == "head"]
    top = inp.labels[max(heads, key=lambda i: float(q_side[i]))] if heads else None
    out: list[Any] = [_header(s)]
    for side, frozen in (("query", "keys frozen"), ("key", "query frozen")):
        cands = ref.default_candidates(inp, side, top=top)
        hist = ref.swap_histograms(inp, cands, side, baseline=True)
        out.append(histogram({k: v["score"] for k, v in hist.items()},
                             title=f"{frozen}: score(END -> {s.target}) - score(END -> S1), {side} replaced",
                             x_title="net score"))
        out.append(histogram({k: v["prob"] for k, v in hist.items()},
                             title=f"{frozen}: attention probability END -> {s.target}, {side} replaced",
                             x_title="probability", bins=40))
    return out


@live_chart("ioi_scores.sum_check", "Does every decomposition add up?",
            "For each decomposition on this page: the largest |sum of its terms - the model's score|, "
            "with the score computed from hook_q and hook_k.")
@with_setup
def sum_check(s: Setup):
    totals = ref.expected_totals(s.inp)
    parts = dict(s.parts, grid_raw=s.grid_raw, grid_base=s.grid_base)
    rows = []
    for key, value in parts.items():
        tag = key.rsplit("_", 1)[-1]
        err = float((value.flatten(1).sum(-1) - totals[tag]).abs().max())
        rows.append({"decomposition": key, "against": "score" if tag == "raw" else "score - S1 score",
                     "max |sum - real|": err, "within 1e-4": err <= 1e-4})
    return pd.DataFrame(rows)


# causal evidence and nulls: charts of the lesson's causal_charts module, listed here too
from mechinterp_edu.lessons.ioi_scores.causal_charts import CHARTS as _CAUSAL_CHARTS  # noqa: E402

CHARTS.extend(_CAUSAL_CHARTS)

# Measures (a)-(c) of the copy_suppressor model's head (issue #13), appended to this lesson's charts.
from mechinterp_edu.lessons.ioi_scores.copy_suppression_charts import CHARTS as _COPY_SUPPRESSOR_CHARTS  # noqa: E402

CHARTS.extend(_COPY_SUPPRESSOR_CHARTS)
