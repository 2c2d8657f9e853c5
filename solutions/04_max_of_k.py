"""Lesson 4 worked solutions: circuits of a max-of-K model.

Written to be read step by step. Conventions: row vectors and ``x @ W``; the single head's
matrices come without a head axis: W_Q, W_K, W_V [d_model, d_head], W_O [d_head, d_model];
W_E [d_vocab, d_model], W_pos [n_ctx, d_model], W_U [d_model, d_vocab].

The query is the token at the last position. Its residual stream is W_E[x_q] + W_pos[-1];
a key or value at position i is W_E[x_i] + W_pos[i] = (W_E + P_avg)[x_i] + P_hat[i].
"""
from __future__ import annotations

import math

import torch


# --------------------------------------------------------------------------- 1. mean + diff
def mean_diff_positions(W_pos: "Float[Tensor, 'n_ctx d_model']"):
    """(P_avg [d_model], P_hat [n_ctx, d_model]) with W_pos[i] = P_avg + P_hat[i].

    Difficulty 1, about 5 minutes.
    """
    n_ctx = W_pos.shape[0]
    # The average positional embedding: what every position has in common.
    P_avg = W_pos.sum(dim=0) / n_ctx
    # What is left at each position; these rows average to zero.
    P_hat = W_pos - P_avg.unsqueeze(0)
    return P_avg, P_hat


def _embedding_tables(W_E, W_pos):
    """E_q (the query, always at the last position) and E_bar (keys/values, at any position)."""
    P_avg, P_hat = mean_diff_positions(W_pos)
    E_q = W_E + W_pos[-1].unsqueeze(0)      # [d_vocab, d_model]
    E_bar = W_E + P_avg.unsqueeze(0)        # [d_vocab, d_model]
    return E_q, E_bar, P_hat


# --------------------------------------------------------------------------- 2. QK circuit
def eqke(W_E: "Float[Tensor, 'd_vocab d_model']", W_pos: "Float[Tensor, 'n_ctx d_model']",
         W_Q: "Float[Tensor, 'd_model d_head']", W_K: "Float[Tensor, 'd_model d_head']"):
    """EQKE [d_vocab (query token), d_vocab (key token)] = E_q W_Q W_K^T E_bar^T / sqrt(d_head).

    Difficulty 2, about 15 minutes.
    """
    E_q, E_bar, _ = _embedding_tables(W_E, W_pos)
    d_head = W_Q.shape[1]
    qk = W_Q @ W_K.T                                  # [d_model, d_model]: the bilinear form of the head
    return (E_q @ qk @ E_bar.T) / math.sqrt(d_head)   # divide by sqrt(d_head), like the model does


def eqkp(W_E: "Float[Tensor, 'd_vocab d_model']", W_pos: "Float[Tensor, 'n_ctx d_model']",
         W_Q: "Float[Tensor, 'd_model d_head']", W_K: "Float[Tensor, 'd_model d_head']"):
    """EQKP [d_vocab (query token), n_ctx (key position)] = E_q W_Q W_K^T P_hat^T / sqrt(d_head).

    Difficulty 2, about 10 minutes.
    """
    E_q, _, P_hat = _embedding_tables(W_E, W_pos)
    d_head = W_Q.shape[1]
    # P_hat, not W_pos: P_avg is already on the key side inside E_bar.
    return (E_q @ (W_Q @ W_K.T) @ P_hat.T) / math.sqrt(d_head)


# --------------------------------------------------------------------------- 3. OV circuit and direct path
def eu(W_E: "Float[Tensor, 'd_vocab d_model']", W_pos: "Float[Tensor, 'n_ctx d_model']",
       W_U: "Float[Tensor, 'd_model d_vocab']"):
    """EU [d_vocab (query token), d_vocab (output logit)] = E_q W_U.

    Difficulty 1, about 5 minutes.
    """
    E_q, _, _ = _embedding_tables(W_E, W_pos)
    return E_q @ W_U


def evou(W_E: "Float[Tensor, 'd_vocab d_model']", W_pos: "Float[Tensor, 'n_ctx d_model']",
         W_V: "Float[Tensor, 'd_model d_head']", W_O: "Float[Tensor, 'd_head d_model']",
         W_U: "Float[Tensor, 'd_model d_vocab']"):
    """EVOU [d_vocab (attended token), d_vocab (output logit)] = E_bar W_V W_O W_U.

    Difficulty 1, about 5 minutes.
    """
    _, E_bar, _ = _embedding_tables(W_E, W_pos)
    ov = W_V @ W_O                  # [d_model, d_model]
    return E_bar @ ov @ W_U


def pvou(W_pos: "Float[Tensor, 'n_ctx d_model']", W_V: "Float[Tensor, 'd_model d_head']",
         W_O: "Float[Tensor, 'd_head d_model']", W_U: "Float[Tensor, 'd_model d_vocab']"):
    """PVOU [n_ctx (attended position), d_vocab (output logit)] = P_hat W_V W_O W_U.

    Difficulty 1, about 5 minutes.
    """
    _, P_hat = mean_diff_positions(W_pos)
    return P_hat @ (W_V @ W_O) @ W_U


# --------------------------------------------------------------------------- 4. logits from the tables
def logits_from_circuits(tokens: "Int[Tensor, 'batch n_ctx']", W_E, W_pos, W_Q, W_K, W_V, W_O, W_U):
    """Last-position logits [batch, d_vocab] from the five tables only:

        EU[x_q] + sum_i softmax_i(EQKE[x_q, x_i] + EQKP[x_q, i]) (EVOU[x_i] + PVOU[i]).

    Written with one-hot matrices, exactly as in the derivation. Difficulty 2, about 20 minutes.
    """
    d_vocab = W_E.shape[0]
    EQKE = eqke(W_E, W_pos, W_Q, W_K)
    EQKP = eqkp(W_E, W_pos, W_Q, W_K)
    EU = eu(W_E, W_pos, W_U)
    EVOU = evou(W_E, W_pos, W_V, W_O, W_U)
    PVOU = pvou(W_pos, W_V, W_O, W_U)

    X = torch.nn.functional.one_hot(tokens, d_vocab).to(W_E.dtype)   # [batch, n_ctx, d_vocab]
    x_q = X[:, -1, :]                                                 # [batch, d_vocab]

    # scores[b, i] = x_q EQKE x_i^T + x_q EQKP[:, i]
    token_scores = (x_q @ EQKE).unsqueeze(1) @ X.transpose(1, 2)     # [batch, 1, n_ctx]
    scores = token_scores.squeeze(1) + x_q @ EQKP                     # [batch, n_ctx]
    pattern = torch.softmax(scores, dim=-1)                           # over key positions

    values = X @ EVOU + PVOU.unsqueeze(0)                             # [batch, n_ctx, d_vocab]
    attended = (pattern.unsqueeze(1) @ values).squeeze(1)             # [batch, d_vocab]
    return x_q @ EU + attended


# --------------------------------------------------------------------------- 5. the SVD view
def eqke_rank_one(eqke: "Float[Tensor, 'd_vocab d_vocab']"):
    """(sigma1 / sigma2, size_direction [d_vocab], query_direction [d_vocab]).

    Sign convention: the size direction v (first right singular vector, over key tokens) is
    turned to correlate positively with the token index 0..d_vocab-1; then the query direction
    is u = EQKE v / sigma1, so that EQKE ~ sigma1 u v^T with sigma1 > 0.
    Difficulty 2, about 15 minutes.
    """
    M = eqke.double()                          # the second singular value is small: work in float64
    U, S, Vh = torch.linalg.svd(M)
    ratio = (S[0] / S[1]).item()

    v = Vh[0]                                  # over key tokens
    index = torch.arange(v.shape[0], dtype=v.dtype, device=v.device)
    centred = index - index.mean()
    if (v * centred).sum() < 0:                # negative correlation with the index: flip
        v = -v
    u = (M @ v) / S[0]                         # the matching left singular vector, sign included
    return ratio, v.to(eqke.dtype), u.to(eqke.dtype)


# --------------------------------------------------------------------------- 6. bug lab
def debug_circuits(W_E, W_pos, W_Q, W_K, W_V, W_O, W_U):
    """The bug lab's circuits function with its three bugs fixed:
    (EQKE, EQKP, EU, EVOU, PVOU).

    The bugs were: the scale 1/d_head (fixed: 1/sqrt(d_head)); the query embedded as W_E
    (fixed: W_E + W_pos[-1]); raw W_pos in EQKP (fixed: P_hat). Difficulty 2, about 20 minutes.
    """
    d_head = W_Q.shape[1]
    scale = math.sqrt(d_head)                    # was: d_head
    P_avg = W_pos.mean(dim=0)
    P_hat = W_pos - P_avg
    E_q = W_E + W_pos[-1]                        # was: W_E
    E_bar = W_E + P_avg
    QK = W_Q @ W_K.T
    OVU = W_V @ W_O @ W_U
    EQKE = E_q @ QK @ E_bar.T / scale
    EQKP = E_q @ QK @ P_hat.T / scale            # was: W_pos.T
    EU = E_q @ W_U
    EVOU = E_bar @ OVU
    PVOU = P_hat @ OVU
    return EQKE, EQKP, EU, EVOU, PVOU


def debug_training_loss(tokens: "Int[Tensor, 'batch n_ctx']", W_E, W_pos, W_Q, W_K, W_V, W_O, W_U):
    """The bug lab's training loss with its two bugs fixed: mean cross-entropy of the last
    position's logits against the max token, with scores divided by sqrt(d_head). A 0-d tensor.

    This is a full causal forward pass over every position; only the last one is scored.
    Difficulty 2, about 15 minutes.
    """
    n = tokens.shape[1]
    d_head = W_Q.shape[1]
    resid = W_E[tokens] + W_pos[:n]                               # [batch, n, d_model]
    q = resid @ W_Q
    k = resid @ W_K
    v = resid @ W_V
    scores = q @ k.transpose(1, 2) / math.sqrt(d_head)           # was: * math.sqrt(d_head)
    causal = torch.ones(n, n, dtype=torch.bool, device=tokens.device).triu(1)
    scores = scores.masked_fill(causal, float("-inf"))
    pattern = scores.softmax(dim=-1)
    resid = resid + (pattern @ v) @ W_O
    logits = resid[:, -1] @ W_U                                    # the last position only
    target = tokens.max(dim=1).values                              # was: tokens[:, -1]
    return torch.nn.functional.cross_entropy(logits, target)


# --------------------------------------------------------------------------- 7. compact proofs
# A proof certifies inputs on which the max token's logit is STRICTLY the largest (a tie is
# wrong). The tables: EQKE [V (query), V (key)], EQKP [V (query), n_ctx], EU [V (query), V],
# EVOU [V (attended token), V], PVOU [n_ctx, V].


def strictly_correct_inputs(EQKE, EQKP, EU, EVOU, PVOU):
    """Brute force: bool [d_vocab] * n_ctx, True where the max token's logit is strictly largest.

    Difficulty 2, about 20 minutes.
    """
    V, n = EQKE.shape[0], EQKP.shape[1]
    # Every input, in the order of the output axes (the first token varies slowest).
    tokens = torch.cartesian_prod(*[torch.arange(V, device=EQKE.device)] * n).reshape(-1, n)
    x_q = tokens[:, -1]
    # The scores of the last position, then the attention pattern.
    scores = EQKE[x_q[:, None], tokens] + EQKP[x_q]                 # [inputs, n]
    pattern = scores.softmax(dim=-1)
    # The logits: the direct path plus the attention-weighted values.
    values = EVOU[tokens] + PVOU                                    # [inputs, n, V]
    logits = EU[x_q] + (pattern[:, :, None] * values).sum(dim=1)    # [inputs, V]
    # Right means: the max token's logit beats every other logit (strictly).
    target = tokens.max(dim=1).values
    chosen = logits.gather(1, target[:, None])[:, 0]
    others = logits.scatter(1, target[:, None], float("-inf"))
    right = chosen > others.max(dim=1).values
    return right.reshape([V] * n)


def pessimal_ablation_bound(g, b, w_lo):
    """min over w in [w_lo, 1] of w g + (1 - w) b.

    w g + (1 - w) b is linear in w, so its minimum over an interval sits at an end:
    w = w_lo or w = 1 (which gives g). Difficulty 1, about 10 minutes.
    """
    at_floor = w_lo * g + (1 - w_lo) * b
    at_one = g
    return torch.minimum(at_floor, at_one)


def _beats_every_other(M):
    """out[r, m] = M[r, m] - max over o != m of M[r, o]."""
    V = M.shape[1]
    out = torch.empty_like(M)
    for m in range(V):
        others = torch.cat([M[:, :m], M[:, m + 1:]], dim=1)
        out[:, m] = M[:, m] - others.max(dim=1).values
    return out


def cubic_bound(EQKE, EQKP, EU, EVOU, PVOU):
    """A lower bound on min_{o != m} (logit_m - logit_o) for every group [m, q, c]: inputs with max
    m, query (last) token q and largest token below m equal to c (c = m: every token is m).
    Groups that hold no input get +inf.

    Difficulty 3, about 45 minutes.
    """
    V, n = EQKE.shape[0], EQKP.shape[1]
    inf = float("inf")
    # The margin over o is sum_i p_i (EU[q,m] - EU[q,o] + v_i(o)): the weights p sum to 1, so the
    # direct path can ride along with every position. Each term is bounded by its worst o.
    # 1. A position i holding m (query q), direct path included: with_direct[q, i, m].
    with_direct = torch.empty(V, n, V, dtype=EQKE.dtype)
    for q in range(V):
        for i in range(n):
            with_direct[q, i] = torch.diagonal(_beats_every_other(EU[q] + EVOU + PVOU[i]))
    # 2. The query token q itself at the last position (when it is not the max): query_term[q, m].
    query_term = _beats_every_other(EU + EVOU + PVOU[n - 1])
    # 3. Any other position: the direct path's worst case plus the value of token t at position i,
    #    D[t, i, m], at its worst over the tokens t <= c (pessimal ablation).
    direct = _beats_every_other(EU)                                          # [q, m]
    D = torch.stack([_beats_every_other(EVOU + PVOU[i]) for i in range(n)], dim=1)
    worst_value = D.clone()
    for t in range(1, V):
        worst_value[t] = torch.minimum(worst_value[t - 1], D[t])                # [c, i, m]
    # 4. The largest score any key t <= c can get from query q.
    top_score = EQKE.clone()
    for t in range(1, V):
        top_score[:, t] = torch.maximum(top_score[:, t - 1], EQKE[:, t])      # [q, c]

    out = torch.full((V, V, V), inf, dtype=EQKE.dtype)
    free = n - 1                                                             # positions before the query
    for m in range(V):
        # Every token is m: all attention is on m.
        out[m, m, m] = with_direct[m, :, m].min()
        for q in range(m + 1):
            for c in range(m):
                if q < m and q > c:
                    continue                                                 # q itself is below m, so c >= q
                worst = inf
                for mask in range(2 ** free):                                # which free positions hold m
                    G = [i for i in range(free) if mask >> i & 1]
                    B = [i for i in range(free) if not mask >> i & 1]
                    if q < m and (not G or (not B and c != q)):
                        continue                                             # m must appear; c must appear
                    if q == m:
                        if not B:
                            continue                                         # some token must be c < m
                        G = G + [n - 1]                                      # the query holds m too
                    s_G = torch.stack([EQKE[q, m] + EQKP[q, i] for i in G])
                    s_B = [top_score[q, c] + EQKP[q, j] for j in B]
                    b_values = [direct[q, m] + worst_value[c, j, m] for j in B]
                    if q < m:                                                # the query: token q, exactly
                        s_B.append(EQKE[q, q] + EQKP[q, n - 1])
                        b_values.append(query_term[q, m])
                    # The smallest attention the max positions can get (softmax, others at their top).
                    w_lo = torch.sigmoid(torch.logsumexp(s_G, 0) - torch.logsumexp(torch.stack(s_B), 0))
                    g = torch.stack([with_direct[q, i, m] for i in G]).min()
                    b = torch.stack(b_values).min()
                    bound = torch.minimum(g, w_lo * g + (1 - w_lo) * b)
                    worst = min(worst, float(bound))
                out[m, q, c] = worst
    return out


def rank_one_residual_bound(EQKE):
    """gap[m, c] <= EQKE[q, m] - EQKE[q, t] for every query q and every key t <= c < m
    (zero where c >= m), from EQKE = sigma1 u v^T + R.

    Difficulty 2, about 25 minutes.
    """
    V = EQKE.shape[0]
    U, S, Vh = torch.linalg.svd(EQKE)
    sigma1, u, v = S[0], U[:, 0], Vh[0]
    # The residual, and the most any entry of it can move a score.
    R = EQKE - sigma1 * torch.outer(u, v)
    rho = R.abs().max()
    gap = torch.zeros(V, V, dtype=EQKE.dtype)
    for m in range(V):
        for c in range(m):
            # sigma1 u_q (v_m - v_t): for x = v_m - v_t >= 0 the worst query has the smallest u_q,
            # for x < 0 the largest. It is concave in x, so the worst key t <= c has the largest
            # or the smallest v_t.
            worst = None
            for x in (v[m] - v[: c + 1].max(), v[m] - v[: c + 1].min()):
                value = sigma1 * (u.min() * x if x >= 0 else u.max() * x)
                worst = value if worst is None else torch.minimum(worst, value)
            # Each residual entry is within rho of zero: the difference of two moves by 2 rho.
            gap[m, c] = worst - 2 * rho
    return gap
