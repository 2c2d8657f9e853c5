"""Every number lesson 5's text states (``lessons/ioi_scores/facts.py``), recomputed another way:
through the TransformerBridge and its hooks, with the worked solutions, from the checkpoint's own
record, or from closed forms. Also: the sampled nulls against their closed forms (1/d, 1/d^2)."""
from __future__ import annotations

import contextlib
import importlib.util
import io
import math
import re

import numpy as np
import pytest
import torch

from mechinterp_edu.course import get_lesson
from mechinterp_edu.lessons.ioi_scores import causal as C
from mechinterp_edu.lessons.ioi_scores import facts as F
from mechinterp_edu.lessons.ioi_scores import nulls

torch.set_num_threads(1)
LESSON = get_lesson(5)


@pytest.fixture(scope="module")
def fx():
    return F.facts()


@pytest.fixture(scope="module")
def bridge():
    from mechinterp_edu.models.zoo import load_model
    with contextlib.redirect_stdout(io.StringIO()):
        return load_model("ioi_small")


@pytest.fixture(scope="module")
def data(bridge):
    from mechinterp_edu.lessons.ioi_scores.data import encode_prompts, sample_prompts
    prompts = sample_prompts(F.N_PROMPTS, F.SPLIT, seed=F.SEED)
    clean = encode_prompts(prompts, bridge.ioi_vocab)
    swapped = encode_prompts(C.corrupt_prompts(prompts, "swap"), bridge.ioi_vocab)
    _, cache = bridge.run_with_cache(clean.tokens)
    return clean, swapped, cache


@pytest.fixture(scope="module")
def solution():
    spec = importlib.util.spec_from_file_location("_lesson05_solution_facts", LESSON.solution_path)
    module = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(module)
    return module


def _args(b):
    return b.positions["END"], b.io_tokens, b.s_tokens


def test_every_placeholder_of_the_text_is_a_fact(fx):
    text = LESSON.source_path.read_text()
    names = set(re.findall(r"\{\{([A-Za-z_][A-Za-z0-9_]*)", text))
    assert names and names <= set(fx), sorted(names - set(fx))
    for name, spec in re.findall(r"\{\{([A-Za-z_][A-Za-z0-9_]*)(?::([^}]*))?\}\}", text):
        format(fx[name], spec)                                  # every format spec fits its value
    # no measured number typed into the prose of the causal or null paragraphs
    assert "16.6" not in text and "0.0156" not in text


def test_config_facts_match_the_bridge_and_the_checkpoint_record(fx, bridge):
    from mechinterp_edu.models.zoo import read_checkpoint
    from mechinterp_edu.lessons.ioi_scores.data import sample_prompts

    cfg = bridge.cfg
    assert (fx["n_layers"], fx["n_heads"], fx["d_head"], fx["d_model"], fx["d_mlp"], fx["vocab_size"]) == \
        (cfg.n_layers, cfg.n_heads, cfg.d_head, cfg.d_model, cfg.d_mlp, cfg.d_vocab)
    recipe = read_checkpoint("ioi_small")["recipe"]
    assert (fx["train_steps"], fx["train_batch"], fx["lr"]) == (recipe["steps"], recipe["batch_size"], recipe["lr"])
    many = sample_prompts(4000, "train", seed=1) + sample_prompts(4000, "test", seed=1)
    assert fx["n_train_templates"] == len({p.template for p in sample_prompts(2000, "train", seed=2)})
    assert fx["n_names"] == len({p.io for p in many} | {p.s for p in many})


def test_logit_difference_facts_from_the_bridges_logits(fx, bridge, data):
    clean, swapped, _ = data
    rows = torch.arange(len(clean))
    end = clean.positions["END"]
    with torch.no_grad():
        logits = bridge(clean.tokens)[rows, end]
        lg = bridge(swapped.tokens)[rows, end]
    ld = logits[rows, clean.io_tokens] - logits[rows, clean.s_tokens]
    assert fx["ld_mean"] == pytest.approx(float(ld.mean()), abs=1e-3)
    assert fx["ld_sd"] == pytest.approx(float(ld.std()), abs=1e-3)
    assert fx["ld_min"] == pytest.approx(float(ld.min()), abs=1e-3)
    assert fx["swap_ld_mean"] == pytest.approx(float((lg[rows, clean.io_tokens] - lg[rows, clean.s_tokens]).mean()),
                                               abs=1e-3)


def test_causal_facts_through_the_bridges_hooks(fx, bridge, data):
    clean, swapped, _ = data
    base = fx["ld_mean"]

    def patch(l, h, where):
        return float(C.patch_head_output_hooked(bridge, clean.tokens, swapped.tokens, *_args(clean), l, h,
                                                clean.positions[where]).mean()) - base

    def ablate(l, h, mode):
        return float(C.ablate_head_hooked(bridge, clean.tokens, *_args(clean), l, h, mode).mean()) - base

    tol = dict(abs=2e-3)
    assert fx["patch_s2_03"] == pytest.approx(patch(0, 3, "S2"), **tol)
    assert fx["patch_s2_02"] == pytest.approx(patch(0, 2, "S2"), **tol)
    assert fx["patch_end_10"] == pytest.approx(patch(1, 0, "END"), **tol)
    l2 = [patch(2, h, "END") for h in range(4)]
    assert fx["patch_end_l2_min"] == pytest.approx(min(l2, key=abs), **tol)
    assert fx["patch_end_l2_max"] == pytest.approx(max(l2, key=abs), **tol)
    assert fx["patch_end_l0_max"] == pytest.approx(max(abs(patch(0, h, "END")) for h in range(4)), **tol)
    assert fx["patch_s2_late_max"] == pytest.approx(max(abs(patch(l, h, "S2")) for l in (1, 2) for h in range(4)),
                                                    **tol)
    assert fx["patch_io_s1_max"] == pytest.approx(max(abs(patch(l, h, w)) for l in range(3) for h in range(4)
                                                      for w in ("IO", "S1")), **tol)
    assert fx["mean_abl_late_max"] == pytest.approx(max(abs(ablate(l, h, "mean")) for l, h in F.LATE), **tol)
    assert fx["mean_abl_03"] == pytest.approx(ablate(0, 3, "mean"), **tol)
    assert fx["mean_abl_01"] == pytest.approx(ablate(0, 1, "mean"), **tol)
    assert fx["zero_abl_01"] == pytest.approx(ablate(0, 1, "zero"), **tol)


def test_path_patching_fact_through_the_bridges_hooks(fx, bridge, data):
    clean, swapped, _ = data
    effects = [float(C.path_patch_query_hooked(bridge, clean.tokens, swapped.tokens, *_args(clean), (ls, hs),
                                               (lr, hr)).mean()) - fx["ld_mean"]
               for lr, hr in F.LATE for ls in range(lr) for hs in range(4)]
    assert fx["path_q_max"] == pytest.approx(max(abs(e) for e in effects), abs=2e-3)


def test_whole_layer_ablations_through_the_bridge(fx, bridge, data):
    clean, _, _ = data
    names = {l: f"blocks.{l}.attn.hook_z" for l in range(3)}
    _, cache = bridge.run_with_cache(clean.tokens, names_filter=lambda n: n in names.values())

    def hook_for(l):
        def hook(z, hook):
            return cache[names[l]].mean(0, keepdim=True).expand_as(z).clone()
        return hook

    for tag, layers in (("l1", (1,)), ("l2", (2,)), ("l12", (1, 2))):
        logits = bridge.run_with_hooks(clean.tokens, fwd_hooks=[(names[l], hook_for(l)) for l in layers])
        assert fx[f"ablate_{tag}"] == pytest.approx(float(C.logit_diff(logits, *_args(clean)).mean()), abs=2e-3)


def test_attention_facts_from_the_bridges_patterns(fx, data):
    clean, _, cache = data
    rows = torch.arange(len(clean))
    P = clean.positions

    def attn(l, src, dst):
        return cache[f"blocks.{l}.attn.hook_pattern"][rows, :, P[src], P[dst]].mean(0)

    assert fx["attn_s2_io_03"] == pytest.approx(float(attn(0, "S2", "IO")[3]), abs=1e-4)
    assert fx["attn_s2_io_02"] == pytest.approx(float(attn(0, "S2", "IO")[2]), abs=1e-4)
    assert fx["attn_s2_s1_l0_max"] == pytest.approx(float(attn(0, "S2", "S1").max()), abs=1e-4)
    names = attn(0, "END", "IO") + attn(0, "END", "S1")
    assert fx["attn_end_names_l0_min"] == pytest.approx(float(names.min()), abs=1e-4)
    assert fx["attn_end_names_l0_max"] == pytest.approx(float(names.max()), abs=1e-4)
    late = min(float(attn(l, "END", "S2").min()) for l in (1, 2))
    assert fx["attn_end_s2_late_min"] == pytest.approx(late, abs=1e-4)


def test_projection_facts_with_the_solution_on_the_bridge(fx, bridge, data, solution):
    clean, _, cache = data
    rows = torch.arange(len(clean))
    end = clean.positions["END"]
    u = bridge.W_U[:, clean.io_tokens].T.double()
    us = bridge.W_U[:, clean.s_tokens].T.double()
    fr, fs = [], []
    for h in range(4):
        out = (cache["blocks.1.attn.hook_z"][rows, end, h] @ bridge.W_O[1, h]).double()
        fr.append(solution.fraction_explained(out, u))
        fs.append(solution.fraction_explained(out, us))
    assert fx["frac_l1_min"] == pytest.approx(min(fr), abs=1e-4)
    assert fx["frac_l1_max"] == pytest.approx(max(fr), abs=1e-4)
    assert fx["frac_s_l1_max"] == pytest.approx(max(fs), abs=1e-4)
    assert fx["frac_over_null"] == pytest.approx(min(fr) / fx["null_cos2_hi"], rel=1e-3)
    from mechinterp_edu.lessons.ioi_scores.data import NAMES
    cos = []
    for name in NAMES:
        t = bridge.ioi_vocab(name)
        a, b = bridge.W_U[:, t].double(), bridge.W_E[t].double()
        cos.append(float(a @ b / (a.norm() * b.norm())))
    assert (fx["cos_wu_we_mean"], fx["cos_wu_we_min"], fx["cos_wu_we_max"]) == pytest.approx(
        (float(np.mean(cos)), min(cos), max(cos)), abs=1e-4)
    d = bridge.cfg.d_model
    assert (fx["inv_d"], fx["two_over_d"], fx["inv_d2"]) == pytest.approx((1 / d, 2 / d, 1 / d ** 2))


def test_cos2_null_matches_its_closed_form(fx):
    d, b = fx["d_model"], F.N_PROMPTS
    var_one = 2 * (d - 1) / (d * d * (d + 2))                 # Beta(1/2, (d-1)/2)
    se = math.sqrt(var_one / b / 200)                           # sampling error of the null's mean
    assert abs(fx["null_cos2_mean"] - 1 / d) < 4 * se
    assert fx["null_cos2_sd_one"] == pytest.approx(math.sqrt(var_one), rel=0.05)
    half = 1.96 * math.sqrt(var_one / b)                        # normal approximation of the band
    assert fx["null_cos2_lo"] == pytest.approx(1 / d - half, abs=0.3 * half)
    assert fx["null_cos2_hi"] == pytest.approx(1 / d + half, abs=0.3 * half)
    assert fx["null_cos2_lo"] < 1 / d < fx["null_cos2_hi"]


@pytest.mark.parametrize("d,k", [(8, 1), (32, 2), (64, 1)])
def test_cos2_null_on_random_vectors(d, k):
    v = torch.randn(500, d, generator=torch.Generator().manual_seed(d), dtype=torch.float64)
    null = nulls.cos2_null(v, k=k, draws=100)
    se = math.sqrt(2 * k * (d - k) / (d * d * (d + 2)) / 500 / 100)   # Beta(k/2, (d-k)/2) variance
    assert abs(null["mean"] - k / d) < 4 * se


@pytest.mark.parametrize("d,cos", [(16, 1.0), (64, 1.0), (64, 0.3)])
def test_parallel_share_mean_is_one_over_d_squared_with_a_wide_spread(d, cos):
    g = torch.Generator().manual_seed(d)
    xq = torch.randn(d, generator=g, dtype=torch.float64)
    xq = xq / xq.norm()
    o = torch.randn(d, generator=g, dtype=torch.float64)
    o = o - (o @ xq) * xq
    xk = cos * xq + math.sqrt(1 - cos * cos) * o / o.norm()
    draws = 200_000
    s = nulls.bilinear_share_draws(xq, xk, draws, seed=d)
    assert abs(float(s.mean()) - 1 / d ** 2) < 4 * float(s.std()) / math.sqrt(draws)
    # the spread: sd about sqrt(d)/|cos| times the mean (at least sqrt(d) for B = I)
    ratio = float(s.std()) * d * d
    assert ratio > 0.6 * math.sqrt(d) / cos and ratio < 1.6 * math.sqrt(d) / cos


def test_four_term_null_mean_matches_the_expectation(fx, bridge, data):
    """E[q∥·k∥] = (bilinear part without biases) / d^2 per prompt; the null's mean share follows."""
    from mechinterp_edu.lessons.ioi_scores import reference as ref

    clean, _, cache = data
    for target, key in (("IO", "io"), ("S2", "s2")):
        inp = ref.gather_head_inputs(bridge, clean, *F.HEAD, target=target)
        d = inp.u.shape[-1]

        def lin(x, s, W):
            return ((x - x.mean(-1, keepdim=True)) / s[:, None]) @ W

        q = lin(inp.q_components.sum(1), inp.scale_q, inp.W_Q)
        k = lin(inp.k_components.sum(1), inp.scale_k, inp.W_K)
        kb = lin(inp.base_components.sum(1), inp.scale_base, inp.W_K)
        net = (inp.real_score() - inp.real_score_base()).mean()
        expected = float(((q * (k - kb)).sum(-1) / math.sqrt(inp.d_head)).mean() / d ** 2 / net)
        samples = nulls.four_term_null(inp)["samples"][:, 0]
        se = float(samples.std()) / math.sqrt(len(samples))
        assert fx[f"null_{key}_pp_mean"] == pytest.approx(expected, abs=4 * se + 1e-6)


def test_four_term_null_bands_with_the_solution_and_numpy_directions(fx, bridge, data, solution):
    """The null bands the text states, resampled with numpy's generator and the worked solution's
    four_terms (a second implementation); 200 draws each, so the quantiles agree to sampling error."""
    from mechinterp_edu.lessons.ioi_scores import reference as ref

    clean, _, _ = data
    rng = np.random.default_rng(11)
    draws = 200
    for target, key, names in (("IO", "io", ("pp",)), ("S2", "s2", ("pp", "pperp"))):
        inp = ref.gather_head_inputs(bridge, clean, *F.HEAD, target=target)
        b, d = inp.u.shape

        def unit():
            x = rng.standard_normal((draws * b, d))
            return torch.from_numpy(x / np.linalg.norm(x, axis=1, keepdims=True)).to(inp.u.dtype)

        def rep(t):
            return t.repeat(draws, *([1] * (t.ndim - 1)))

        u, m, mb = unit(), unit(), unit()
        args = (inp.W_Q, inp.b_Q, inp.W_K, inp.b_K)
        xq, sq = rep(inp.q_components.sum(1)), rep(inp.scale_q)
        t = solution.four_terms(xq, sq, u, rep(inp.k_components.sum(1)), rep(inp.scale_k), m, *args)
        tb = solution.four_terms(xq, sq, u, rep(inp.base_components.sum(1)), rep(inp.scale_base), mb, *args)
        diff = (t - tb).view(draws, b, 4)
        shares = (diff.mean(1) / diff.sum(-1).mean(1)[:, None]).numpy()
        for i, name in enumerate(("pp", "pperp", "perpp", "perpperp")):
            if name not in names:
                continue
            lo, hi = np.quantile(shares[:, i], [0.025, 0.975])
            tol = 0.3 * (hi - lo)
            assert fx[f"null_{key}_{name}_hi"] == pytest.approx(hi, abs=tol), (key, name)
            if f"null_{key}_{name}_lo" in fx:
                assert fx[f"null_{key}_{name}_lo"] == pytest.approx(lo, abs=tol), (key, name)


def test_share_and_score_facts_with_the_solution_on_the_bridge(fx, bridge, data, solution):
    from mechinterp_edu.lessons.ioi_scores import reference as ref

    clean, _, cache = data
    for target, key in (("IO", "io"), ("S2", "s2")):
        inp = ref.gather_head_inputs(bridge, clean, *F.HEAD, target=target)
        xq = inp.q_components.sum(1)
        args = (inp.W_Q, inp.b_Q, inp.W_K, inp.b_K)
        t = solution.four_terms(xq, inp.scale_q, inp.u, inp.k_components.sum(1), inp.scale_k, inp.m_k, *args)
        tb = solution.four_terms(xq, inp.scale_q, inp.u, inp.base_components.sum(1), inp.scale_base, inp.m_base,
                                 *args)
        share = solution.share_explained(t, tb)
        for i, name in enumerate(("pp", "pperp", "perpp", "perpperp")):
            assert fx[f"share_{key}_{name}"] == pytest.approx(float(share[i]), abs=2e-3)
        net = (t - tb).sum(-1).mean()
        assert fx[f"net_{key}_head"] == pytest.approx(float(net), abs=1e-3)
        assert fx[f"term_{key}_pp"] == pytest.approx(float((t - tb)[:, 0].mean()), abs=1e-3)
    rows = torch.arange(len(clean))
    P = clean.positions
    nets, sds, raws = [], [], []
    for l, h in F.LATE:
        q = cache[f"blocks.{l}.attn.hook_q"][rows, P["END"], h].double()
        k = cache[f"blocks.{l}.attn.hook_k"][:, :, h].double()
        raw = (q * k[rows, P["IO"]]).sum(-1) / math.sqrt(bridge.cfg.d_head)
        net = raw - (q * k[rows, P["S1"]]).sum(-1) / math.sqrt(bridge.cfg.d_head)
        nets.append(abs(float(net.mean())))
        sds.append(float(net.std()))
        raws.append(float(raw.mean()))
    assert fx["net_io_absmax"] == pytest.approx(max(nets), abs=1e-3)
    assert (fx["net_io_sd_min"], fx["net_io_sd_max"]) == pytest.approx((min(sds), max(sds)), abs=1e-3)
    assert (fx["raw_io_min"], fx["raw_io_max"]) == pytest.approx((min(raws), max(raws)), abs=1e-3)


def test_spread_facts_against_an_independent_sampler(fx, bridge, data):
    from mechinterp_edu.lessons.ioi_scores import reference as ref

    clean, _, _ = data
    inp = ref.gather_head_inputs(bridge, clean, *F.HEAD)
    d = inp.u.shape[-1]
    assert fx["spread_aligned"] == pytest.approx(math.sqrt(d))
    centre = np.eye(d) - 1.0 / d
    B = centre @ inp.W_Q.numpy() @ inp.W_K.numpy().T @ centre
    xq, xk = inp.q_components.sum(1).numpy(), inp.k_components.sum(1).numpy()
    rng = np.random.default_rng(7)
    ratios = []
    for i in range(16):
        u = rng.standard_normal((20_000, d))
        m = rng.standard_normal((20_000, d))
        u /= np.linalg.norm(u, axis=1, keepdims=True)
        m /= np.linalg.norm(m, axis=1, keepdims=True)
        share = (u @ xq[i]) * (m @ xk[i]) * np.einsum("nd,de,ne->n", u, B, m) / (xq[i] @ B @ xk[i])
        ratios.append(share.std() * d * d)
    assert fx["spread_median"] == pytest.approx(float(np.median(ratios)), rel=0.15)
    assert fx["spread_min"] == pytest.approx(min(ratios), rel=0.2)
    assert fx["spread_max"] == pytest.approx(max(ratios), rel=0.2)


def test_the_texts_qualitative_claims_follow_from_the_facts(fx):
    """The words around the numbers: each claim the causal and four-term paragraphs make."""
    assert fx["ld_min"] > 0                                       # "prefers IO to S on every prompt"
    assert fx["ld_mean"] + fx["patch_s2_03"] < 0                  # "past zero, the model now prefers S"
    assert fx["patch_end_l0_max"] < 0.1 * abs(fx["patch_end_10"])  # "the layer-0 attention at END does not matter"
    assert fx["ablate_l12"] < 0.1 * min(fx["ablate_l1"], fx["ablate_l2"])  # "back each other up"
    assert abs(fx["zero_abl_01"]) > 5 * abs(fx["mean_abl_01"])
    assert fx["frac_l1_min"] > fx["null_cos2_hi"] and fx["frac_over_null"] >= 1
    # key at IO: q∥·k∥ alone exceeds the net, the other three take part of it back, and it is far outside the null
    assert fx["term_io_pp"] > fx["net_io_head"] > 0 and fx["share_io_pp"] > 10 * fx["null_io_pp_hi"]
    # key at S2: "far more than chance", "most of it runs elsewhere"
    assert fx["share_s2_pp"] > 10 * fx["null_s2_pp_hi"] and fx["share_s2_pperp"] > fx["null_s2_pperp_hi"]
    assert fx["share_s2_pp"] + fx["share_s2_pperp"] < 0.5
    assert fx["spread_min"] <= fx["spread_median"] <= fx["spread_max"]


def test_batched_derivation_still_proves_off_the_page():
    from mechinterp_edu.derivations.framework import check
    from mechinterp_edu.lessons.ioi_scores.batched_derivation import BATCHED
    from mechinterp_edu.lessons.ioi_scores.null_derivations import NULLS

    for derivation in (BATCHED, NULLS):
        results = check(derivation)
        assert results and all(r.passed for r in results), [(r.step, r.detail) for r in results if not r.passed]
