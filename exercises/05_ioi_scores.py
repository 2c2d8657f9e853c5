"""Lesson 5 exercises: decomposing an attention score (END -> IO) by component.

Fill in each function; keep the signatures. Check your work with
    python -m mechinterp_edu grade exercises/05_ioi_scores.py

Conventions (one head of one layer; row vectors, x @ W):
    W_Q, W_K [d_model, d_head];  b_Q, b_K [d_head]
    scale [batch]   the LayerNorm scale of the residual stream at a position, read from the
                    cache (blocks.L.ln1.hook_scale) and FROZEN: it is one number per prompt.
    LN*(x) = (x - mean(x)) / scale     (mean over d_model; the model's LayerNorm is folded, so
                                        this is all ln1 does before W_Q / W_K)
    q = LN*(x_END) W_Q + b_Q,  k = LN*(x_IO) W_K + b_K,  score = q . k / sqrt(d_head)
    components [batch, n, d_model]: pieces of the residual stream (head outputs, MLP outputs,
                    embeddings, biases) that add up to it.
Sections 1-5 decompose a score; section 6 (causal evidence) gives you `run_model`, a complete
forward pass with hooks, and asks for interventions on one head; section 7 is an optional null.
Exercises marked OPTIONAL in their docstring are outside the lesson's main path.
Work in the dtype of the inputs and on their device. Only torch, numpy, einops, math and
transformer_lens may be imported here.
"""
import math

import torch


# --------------------------------------------------------------------------- 1. projections
def project(vectors: "Float[Tensor, 'batch d']", directions: "Float[Tensor, 'batch k d']"):
    """Split each vector into its part in span(directions) and the rest.

    directions: k >= 1 linearly independent directions per prompt, of any length, not
    necessarily orthogonal. Returns (parallel [batch, d], perpendicular [batch, d]) with
    parallel + perpendicular = vectors and perpendicular orthogonal to every direction.

    Difficulty 2 (medium), about 15 minutes.

    Hints:
      * With one direction u: parallel = (v . u) / (u . u) * u.
      * With several, first make an orthonormal basis of their span (torch.linalg.qr of
        directions transposed, or Gram-Schmidt).
    """
    raise NotImplementedError("not implemented yet")


def fraction_explained(vectors: "Float[Tensor, 'batch d']", directions: "Float[Tensor, 'batch k d']") -> float:
    """OPTIONAL. The mean over the batch of |parallel|^2 / |vector|^2, as a Python float.

    For one direction this is the mean of cos^2. For k directions drawn at random in d
    dimensions it is k/d on average: compare your numbers with that chance level.

    Difficulty 1 (easy), about 10 minutes.
    """
    raise NotImplementedError("not implemented yet")


# --------------------------------------------------------------------------- 2. linear maps
def score_linear_in_keys(q: "Float[Tensor, 'batch d_head']", W_K: "Float[Tensor, 'd_model d_head']",
                         b_K: "Float[Tensor, 'd_head']", scale: "Float[Tensor, 'batch']"):
    """With the query q and the key-side LN scale frozen, the score is affine in the key-side
    residual stream x (raw, before LayerNorm): score = x . map + bias.

    Returns (map [batch, d_model], bias [batch]).

    Difficulty 2 (medium), about 15 minutes.

    Hints:
      * score = (LN*(x) W_K + b_K) . q / sqrt(d_head). Expand.
      * LN* subtracts the mean of x; on the map side that means subtracting the mean of W_K q.
    """
    raise NotImplementedError("not implemented yet")


def score_linear_in_queries(k: "Float[Tensor, 'batch d_head']", W_Q: "Float[Tensor, 'd_model d_head']",
                            b_Q: "Float[Tensor, 'd_head']", scale: "Float[Tensor, 'batch']"):
    """OPTIONAL. The same with the key k frozen: score = x_END . map + bias. Returns (map, bias).

    Difficulty 1 (easy), about 5 minutes.
    """
    raise NotImplementedError("not implemented yet")


# --------------------------------------------------------------------------- 3. decompositions
def decompose_keys(q: "Float[Tensor, 'batch d_head']", components: "Float[Tensor, 'batch n d_model']",
                   scale: "Float[Tensor, 'batch']", W_K: "Float[Tensor, 'd_model d_head']",
                   b_K: "Float[Tensor, 'd_head']"):
    """The score split by key-side component: [batch, n + 1].

    Column j < n is the contribution of component j (through LN* with the frozen scale and W_K);
    column n is the bias term q . b_K / sqrt(d_head). Each row sums to the score.

    Difficulty 2 (medium), about 20 minutes.
    """
    raise NotImplementedError("not implemented yet")


def decompose_queries(k: "Float[Tensor, 'batch d_head']", components: "Float[Tensor, 'batch n d_model']",
                      scale: "Float[Tensor, 'batch']", W_Q: "Float[Tensor, 'd_model d_head']",
                      b_Q: "Float[Tensor, 'd_head']"):
    """OPTIONAL. The score split by query-side component (components at END): [batch, n + 1], with the
    bias term k . b_Q / sqrt(d_head) last.

    Difficulty 2 (medium), about 10 minutes.
    """
    raise NotImplementedError("not implemented yet")


# --------------------------------------------------------------------------- 4. the S1 baseline
def decompose_keys_minus_baseline(q: "Float[Tensor, 'batch d_head']",
                                  components: "Float[Tensor, 'batch n d_model']",
                                  scale: "Float[Tensor, 'batch']",
                                  components_base: "Float[Tensor, 'batch n d_model']",
                                  scale_base: "Float[Tensor, 'batch']",
                                  W_K: "Float[Tensor, 'd_model d_head']", b_K: "Float[Tensor, 'd_head']"):
    """score(END -> IO) - score(END -> S1), split by key-side component: [batch, n + 1].

    components / scale: at IO; components_base / scale_base: the same components at S1.
    Column n is the bias term of the difference. Rows sum to the score difference.

    Difficulty 2 (medium), about 15 minutes.
    """
    raise NotImplementedError("not implemented yet")


def decompose_queries_minus_baseline(k: "Float[Tensor, 'batch d_head']", k_base: "Float[Tensor, 'batch d_head']",
                                     components: "Float[Tensor, 'batch n d_model']",
                                     scale: "Float[Tensor, 'batch']", W_Q: "Float[Tensor, 'd_model d_head']",
                                     b_Q: "Float[Tensor, 'd_head']"):
    """OPTIONAL. The same difference split by query-side component: [batch, n + 1], bias term last.

    k: the key at IO, k_base: the key at S1 (both from the cache).

    Difficulty 2 (medium), about 10 minutes.
    """
    raise NotImplementedError("not implemented yet")


# --------------------------------------------------------------------------- 5. four terms
def four_terms(x_q: "Float[Tensor, 'batch d_model']", scale_q: "Float[Tensor, 'batch']",
               u: "Float[Tensor, 'batch d_model']", x_k: "Float[Tensor, 'batch d_model']",
               scale_k: "Float[Tensor, 'batch']", m: "Float[Tensor, 'batch d_model']",
               W_Q: "Float[Tensor, 'd_model d_head']", b_Q: "Float[Tensor, 'd_head']",
               W_K: "Float[Tensor, 'd_model d_head']", b_K: "Float[Tensor, 'd_head']"):
    """The four-term split of the score: [batch, 4].

    Split the query-side residual x_q into parts parallel and perpendicular to u (e.g. W_U[IO]),
    and the key-side residual x_k into parts parallel and perpendicular to m (e.g. the MLP0
    output at IO). q_par = LN*(x_q_par) W_Q, q_perp = LN*(x_q_perp) W_Q + b_Q (the bias goes
    with the perpendicular part), and the same for k with W_K, b_K. Return, in this order,
        q_par . k_par,  q_par . k_perp,  q_perp . k_par,  q_perp . k_perp   (each / sqrt(d_head)).

    Difficulty 3 (harder), about 25 minutes.
    """
    raise NotImplementedError("not implemented yet")


def share_explained(terms: "Float[Tensor, 'batch 4']", terms_base: "Float[Tensor, 'batch 4']"):
    """OPTIONAL. The share of the net IO - S1 score difference carried by each of the four terms: [4].

    terms: four_terms with the key at IO; terms_base: with the key at S1. Use
    mean over prompts of (term - term_base) divided by mean over prompts of the total difference.

    Difficulty 1 (easy), about 10 minutes.
    """
    raise NotImplementedError("not implemented yet")


# --------------------------------------------------------------------------- 6. causal evidence
# The model arrives as a dict `weights` of TransformerLens-shaped, LayerNorm-folded weights:
#   W_E [d_vocab, d_model], W_pos [n_ctx, d_model], W_Q/W_K/W_V [n_layers, n_heads, d_model, d_head],
#   b_Q/b_K/b_V [n_layers, n_heads, d_head], W_O [n_layers, n_heads, d_head, d_model], b_O [n_layers, d_model],
#   W_in [n_layers, d_model, d_mlp], b_in, W_out [n_layers, d_mlp, d_model], b_out, W_U [d_model, d_vocab], b_U.
# run_model below (given, do not change) runs it; `hook(name, layer, tensor)` is called with
# name "pattern" ([batch, n_heads, query, key]) and "z" ([batch, seq, n_heads, d_head]) in every layer
# and may return a replacement tensor (or None to keep it). A head's OUTPUT is z[:, :, head] @ W_O[layer, head].
def run_model(weights, tokens, hook=None, eps=1e-5):
    """Given. Returns (logits [batch, seq, d_vocab], zs: list of each layer's z after any edit)."""
    def layer_norm(x):
        x = x - x.mean(-1, keepdim=True)
        return x / (x.pow(2).mean(-1, keepdim=True) + eps).sqrt()

    w = weights
    seq = tokens.shape[1]
    x = w["W_E"][tokens] + w["W_pos"][:seq]
    mask = torch.ones(seq, seq, dtype=torch.bool, device=x.device).tril()
    zs = []
    for l in range(w["W_Q"].shape[0]):
        h = layer_norm(x)
        q = torch.einsum("bsd,hde->bshe", h, w["W_Q"][l]) + w["b_Q"][l]
        k = torch.einsum("bsd,hde->bshe", h, w["W_K"][l]) + w["b_K"][l]
        v = torch.einsum("bsd,hde->bshe", h, w["W_V"][l]) + w["b_V"][l]
        scores = torch.einsum("bqhe,bkhe->bhqk", q, k) / math.sqrt(q.shape[-1])
        pattern = scores.masked_fill(~mask, float("-inf")).softmax(-1)
        if hook is not None:
            pattern = _replaced(hook("pattern", l, pattern), pattern)
        z = torch.einsum("bhqk,bkhe->bqhe", pattern, v)
        if hook is not None:
            z = _replaced(hook("z", l, z), z)
        zs.append(z)
        x = x + torch.einsum("bshe,hed->bsd", z, w["W_O"][l]) + w["b_O"][l]
        pre = layer_norm(x) @ w["W_in"][l] + w["b_in"][l]
        gelu = 0.5 * pre * (1 + torch.tanh(math.sqrt(2 / math.pi) * (pre + 0.044715 * pre ** 3)))
        x = x + gelu @ w["W_out"][l] + w["b_out"][l]
    return layer_norm(x) @ w["W_U"] + w["b_U"], zs


def _replaced(new, old):
    return old if new is None else new


def logit_diff(logits: "Float[Tensor, 'batch seq d_vocab']", end: "Int[Tensor, 'batch']",
               io: "Int[Tensor, 'batch']", s: "Int[Tensor, 'batch']"):
    """logit(IO) - logit(S) at each prompt's END position: [batch].

    end[b] is the position of prompt b's last word; it need not be the last index of the tensor.

    Difficulty 1 (easy), about 5 minutes.
    """
    raise NotImplementedError("not implemented yet")


def ablate_head(weights, tokens: "Int[Tensor, 'batch seq']", end, io, s, layer: int, head: int, mode: str):
    """The logit difference [batch] after ablating head `layer.head`.

    mode "mean": replace the head's output at every position by its mean over the prompts of this
    batch at that position; mode "zero": by zero. Everything downstream is rerun (run_model does it).

    Difficulty 2 (medium), about 20 minutes.

    Hints:
      * First a clean run to get the head's z; then a second run whose hook replaces z[:, :, head].
      * Ablate the OUTPUT (z), not the attention pattern.
    """
    raise NotImplementedError("not implemented yet")


def patch_head_output(weights, clean_tokens, corrupt_tokens, end, io, s, layer: int, head: int,
                      pos: "Int[Tensor, 'batch']"):
    """The clean prompts' logit difference [batch] (their own io, s) when head `layer.head`'s output
    at position pos[b] of prompt b comes from the run on corrupt_tokens (the same prompt with IO and
    S swapped, or replaced by other names). Only that head, only that position.

    Difficulty 2 (medium), about 20 minutes.
    """
    raise NotImplementedError("not implemented yet")


# --------------------------------------------------------------------------- 7. the null (optional)
def parallel_share_null(x_q: "Float[Tensor, 'd']", x_k: "Float[Tensor, 'd']", B: "Float[Tensor, 'd d']",
                        u: "Float[Tensor, 'draws d']", m: "Float[Tensor, 'draws d']"):
    """OPTIONAL. The null of the (q along u) x (k along m) share of a bilinear score x_q B x_k^T.

    For each draw n, with u[n] and m[n] random directions (not normalised):
        share_n = (x_q . û)(x_k . m̂)(û B m̂^T) / (x_q B x_k^T)
    Return (mean over draws, torch.quantile(share, 0.025), torch.quantile(share, 0.975)).
    Compare the mean with 1/d^2 and the band with the mean.

    Difficulty 1 (easy), about 10 minutes.
    """
    raise NotImplementedError("not implemented yet")
