"""Lesson 3 live charts: the skip-trigrams of a typed sequence on a head's attention pattern,
the top skip-trigrams read from the circuits, planted versus recovered, and the skip-trigram
bug in the toy model.

Controls (see ``lessons/03_skip_trigrams.md``): ``model`` ("skip_trigrams" or "random": an
untrained model of the same shape), ``head``, ``sequence`` (token names or ids; ``<s>`` is
put in front when missing, as in training), ``k`` (length of the top list).
"""
from __future__ import annotations

import contextlib
import functools
import io
from dataclasses import dataclass, field
from typing import Any

import altair as alt
import pandas as pd
import torch

from mechinterp_edu.charts import heatmap
from mechinterp_edu.live.inputs import InputProblem, with_setup_from
from mechinterp_edu.live.registry import LiveChart, chart_decorator
from mechinterp_edu.lessons.skip_trigrams import model as st
from mechinterp_edu.lessons.skip_trigrams import reference as ref

CHARTS: list[LiveChart] = []
live_chart = chart_decorator(CHARTS)

WEIGHT_KEYS = ("W_E", "W_pos", "W_Q", "W_K", "W_V", "W_O", "W_U")
DEFAULT_SEQUENCE = "<s> keep the it in mind so take a to heart"


@functools.lru_cache(maxsize=4)
def _model(name: str):
    """(model, note) in float64 on the CPU; the random model is seeded and biases are zero."""
    if name == "random":
        torch.manual_seed(1234)
        return st.build().to(torch.float64).eval(), ""
    if name != "skip_trigrams":
        raise InputProblem(f"unknown model {name!r}: choose skip_trigrams or random.")
    try:
        from mechinterp_edu.models.zoo import load_model
        with contextlib.redirect_stdout(io.StringIO()):
            return load_model("skip_trigrams", device="cpu", dtype=torch.float64), ""
    except Exception as exc:  # noqa: BLE001 - missing / corrupt checkpoint: say so, use a random model
        torch.manual_seed(1234)
        note = (f"The trained model could not be loaded ({str(exc).splitlines()[0]}); showing an untrained "
                f"model of the same shape instead.")
        return st.build().to(torch.float64).eval(), note


@functools.lru_cache(maxsize=4)
def _tables(name: str) -> dict[str, Any]:
    model, _ = _model(name)
    w = st.model_weights(model)
    w = {k: w[k].double() for k in WEIGHT_KEYS}
    per_head = ref.skip_trigram_scores_all(*[w[k] for k in WEIGHT_KEYS])      # [h, A, B, C]
    total = per_head.sum(0)
    return {"weights": w, "per_head": per_head, "total": total}


@functools.lru_cache(maxsize=4)
def _accuracy(name: str) -> float:
    return st.planted_accuracy(_model(name)[0], st.eval_batch(1024))


@dataclass
class Setup:
    name: str
    model: Any
    tokens: list[int]
    head: int
    k: int
    notes: list[str] = field(default_factory=list)

    @property
    def n_heads(self) -> int:
        return self.model.cfg.n_heads


def setup(ctx: dict[str, Any]) -> Setup:
    name = str(ctx.get("model") or "skip_trigrams")
    model, note = _model(name)
    notes = [note] if note else []
    text = str(ctx.get("sequence") or "").strip()
    if not text:
        raise InputProblem(f"the sequence is empty: type tokens separated by spaces, e.g. '{DEFAULT_SEQUENCE}'.")
    try:
        tokens = st.encode(text, bos=True)
    except ValueError as exc:
        raise InputProblem(str(exc)) from None
    n_ctx = model.cfg.n_ctx
    if len(tokens) > n_ctx:
        notes.append(f"The model reads at most {n_ctx} tokens (with <s>); using the first {n_ctx}.")
        tokens = tokens[:n_ctx]
    try:
        head = int(ctx.get("head", 0) or 0)
    except (TypeError, ValueError):
        raise InputProblem(f"head must be a whole number from 0 to {model.cfg.n_heads - 1}.") from None
    if not 0 <= head < model.cfg.n_heads:
        notes.append(f"The model has heads 0 to {model.cfg.n_heads - 1}; showing head {head % model.cfg.n_heads}.")
        head %= model.cfg.n_heads
    try:
        k = max(1, min(200, int(ctx.get("k", len(st.PLANTED)) or len(st.PLANTED))))
    except (TypeError, ValueError):
        raise InputProblem("k must be a whole number (how many skip-trigrams to list).") from None
    return Setup(name, model, tokens, head, k, notes)


with_setup = with_setup_from(setup)


def _label(triple) -> str:
    return st.trigram_names(triple)


def _kind(triple) -> str:
    triple = tuple(int(x) for x in triple)
    if triple in st.PLANTED:
        return "planted"
    if triple in st.BUG_TRIGRAMS:
        return "bug (never in the data)"
    return ""


@torch.no_grad()
def _run(s: Setup):
    toks = torch.tensor([s.tokens])
    logits, cache = s.model.run_with_cache(toks)
    return logits[0].double(), cache


# --------------------------------------------------------------------------- charts
@live_chart("skip_trigrams.sequence", "Skip-trigrams of your sequence on the attention pattern",
            "Heatmap: the head's attention from each destination i (row) to each source j (column). "
            "Every cell below the diagonal, except in the last row, is a skip-trigram "
            "(t[j], t[i], t[i+1]); a star marks the planted ones.")
@with_setup
def sequence_chart(s: Setup):
    logits, cache = _run(s)
    pattern = cache["blocks.0.attn.hook_pattern"][0, s.head].double()
    n = len(s.tokens)
    names = st.decode(s.tokens)
    labels = [f"{w}@{i}" for i, w in enumerate(names)]
    total = _tables(s.name)["total"]
    per_head = _tables(s.name)["per_head"][s.head]
    rows = []
    for j, i in ref.skip_trigram_positions(n):
        triple = (s.tokens[j], s.tokens[i], s.tokens[i + 1])
        rows.append({"source j": j, "destination i": i, "A": names[j], "B": names[i], "C": names[i + 1],
                     f"attention i→j (head {s.head})": float(pattern[i, j]),
                     f"score (head {s.head})": float(per_head[triple]),
                     "score (all heads)": float(total[triple]), "planted?": _kind(triple)})
    frame = pd.DataFrame(rows)
    chart = heatmap(pattern, title=f"head {s.head} attention; ★ = planted skip-trigram",
                    x_labels=labels, y_labels=labels, x_title="source j (A)", y_title="destination i (B)",
                    kind="prob", width=360, height=360)
    stars = [{"row": labels[r["destination i"]], "col": labels[r["source j"]]}
             for r in rows if r["planted?"] == "planted"]
    if stars:
        layer = alt.Chart(pd.DataFrame(stars)).mark_text(text="★", color="#d35400", size=16).encode(
            x=alt.X("col:N", sort=labels), y=alt.Y("row:N", sort=labels))
        chart = alt.layer(chart, layer)
    found = len({(r["A"], r["B"], r["C"]) for r in rows})
    text = (f"The sequence has {n} tokens, so {len(rows)} (source, destination) pairs with a next token "
            f"and {found} distinct skip-trigrams. Prediction after the last token: "
            f"**{st.VOCAB[int(logits[-1].argmax())]}**.")
    if not rows:
        text = "A sequence needs at least 3 tokens (with <s>) to contain a skip-trigram."
    table = frame.sort_values(f"attention i→j (head {s.head})", ascending=False) if rows else frame
    return [text, chart, table]


@live_chart("skip_trigrams.top_table", "Top skip-trigrams from the circuits",
            "Ranked by the score summed over heads (weights only, no data). Per-head columns show "
            "which head carries each one.")
@with_setup
def top_table(s: Setup):
    tables = _tables(s.name)
    w = tables["weights"]
    top = ref.top_skip_trigrams(*[w[k] for k in WEIGHT_KEYS], s.k)
    rows = []
    for rank, triple in enumerate(top):
        row = {"rank": rank + 1, "skip-trigram": _label(triple), "score (sum)": float(tables["total"][triple])}
        for h in range(s.n_heads):
            row[f"head {h}"] = float(tables["per_head"][h][triple])
        row["planted?"] = _kind(triple)
        rows.append(row)
    return pd.DataFrame(rows)


@live_chart("skip_trigrams.planted_vs_found", "Planted versus recovered",
            "Every planted skip-trigram with its rank among all d_vocab^3 triples by the summed score; "
            "recovered means rank <= k.")
@with_setup
def planted_vs_found(s: Setup):
    tables = _tables(s.name)
    total = tables["total"]
    flat = total.reshape(-1)
    rows = []
    for triple in st.PLANTED:
        rank = int((flat > total[triple]).sum()) + 1
        rows.append({"planted": _label(triple), "rank": rank, "recovered (rank <= k)": rank <= s.k,
                     "best head": int(tables["per_head"][:, triple[0], triple[1], triple[2]].argmax())})
    frame = pd.DataFrame(rows).sort_values("rank")
    w = tables["weights"]
    found = ref.top_skip_trigrams(*[w[k] for k in WEIGHT_KEYS], s.k)
    intruders = [_label(t) for t in found if tuple(t) not in st.PLANTED]
    metrics = {
        "planted": len(st.PLANTED),
        "k": s.k,
        "recovered": f"{ref.recovery_rate(found, st.PLANTED):.1%}",
        "accuracy on planted positions": f"{_accuracy(s.name):.1%}",
    }
    note = ("In the top list but not planted: " + ", ".join(intruders[:8]) + ("…" if len(intruders) > 8 else "")
            if intruders else "Every entry of the top list is planted.")
    return [metrics, frame, note]


@torch.no_grad()
def bug_numbers(model, n: int = 256) -> dict[str, Any]:
    """Per-head lifts of mind/bay at keep ... in and keep ... at, and P(bay | keep ... in) with and
    without each head (the head's output subtracted from the logits)."""
    out: dict[str, Any] = {}
    for b in ("in", "at"):
        out[b] = st.head_lifts(model, "keep", b, n=n)                      # [head, vocab]
    with_keep, _ = st.bug_contexts(n, 3, "keep", "in")
    logits, cache = model.run_with_cache(with_keep)
    w = st.model_weights(model)
    z = cache["blocks.0.attn.hook_z"][:, -1].double()
    per_head = torch.einsum("nhd,hdm,mv->nhv", z, w["W_O"].double(), w["W_U"].double())
    final = logits[:, -1].double()
    probs = {"all heads": final.softmax(-1)[:, st.TOKEN_ID["bay"]].mean().item()}
    for h in range(per_head.shape[1]):
        probs[f"without head {h}"] = (final - per_head[:, h]).softmax(-1)[:, st.TOKEN_ID["bay"]].mean().item()
    out["p_bay"] = probs
    return out


@live_chart("skip_trigrams.bug", "The skip-trigram bug: keep … in → bay",
            "How much each head raises the logits of mind and bay after keep … in and keep … at, "
            "compared with a filler in keep's place (mean over 256 random contexts).")
@with_setup
def bug_chart(s: Setup):
    nums = bug_numbers(s.model)
    rows = []
    for b in ("in", "at"):
        for h in range(s.n_heads):
            for c in ("mind", "bay"):
                rows.append({"context": f"keep … {b}", "head": f"head {h}", "logit": c,
                             "lift": float(nums[b][h, st.TOKEN_ID[c]])})
    frame = pd.DataFrame(rows)
    chart = (alt.Chart(frame, title="per-head logit lift caused by keep")
             .mark_bar()
             .encode(x=alt.X("head:N", title=""), xOffset="logit:N", y=alt.Y("lift:Q", title="logit lift"),
                     color=alt.Color("logit:N", scale=alt.Scale(domain=["mind", "bay"], range=["#3b6fb6", "#c0392b"])),
                     column=alt.Column("context:N", title=""),
                     tooltip=["context", "head", "logit", alt.Tooltip("lift:Q", format=".3g")])
             .properties(width=220, height=240))
    lifts_in = nums["in"][:, st.TOKEN_ID["bay"]]
    bug_head = int(lifts_in.argmax())
    probs = {k: f"{v:.3%}" for k, v in nums["p_bay"].items()}
    text = (f"After **keep … in**, head {bug_head} raises *bay* by {float(lifts_in[bug_head]):.1f} logits, "
            f"although keep … in → bay never occurs in the data. P(bay) after keep … in, all heads and with "
            f"one head's output removed:")
    per_head = _tables(s.name)["per_head"][s.head]
    keep = st.TOKEN_ID["keep"]
    b_ids = [st.TOKEN_ID[b] for b in st.B_TOKENS]
    c_ids = [st.TOKEN_ID[c] for c in st.C_TOKENS]
    slice_ = per_head[keep][b_ids][:, c_ids]
    heat = heatmap(slice_, title=f"head {s.head}: S(keep, B, C), a rank-one table",
                   x_labels=list(st.C_TOKENS), y_labels=list(st.B_TOKENS), x_title="C", y_title="B",
                   width=420, height=140)
    sv = torch.linalg.svdvals(slice_)
    rank_note = (f"Singular values of this table: {', '.join(f'{v:.3g}' for v in sv.tolist())}: one non-zero, "
                 f"as the factorisation S = attn[B, keep] · ov[keep, C] demands.")
    return [text, probs, chart, heat, rank_note]
