"""Lesson 4 exercises: circuits of a max-of-K model (compact proofs).

Fill in each function; keep the signatures. Check your work with
    python -m mechinterp_edu grade exercises/04_max_of_k.py

The model has one layer and one head, so the head's matrices come without a head axis:
    W_E [d_vocab, d_model], W_pos [n_ctx, d_model], W_U [d_model, d_vocab]
    W_Q, W_K, W_V [d_model, d_head], W_O [d_head, d_model]
Row vectors, x @ W. The query is the token at the LAST position, x_q = tokens[:, -1].
Work in the dtype of the weights and on their device. Only torch, numpy, einops, math and
transformer_lens may be imported here.

Part 6 is a bug lab: `buggy_circuits` and `buggy_training_loss` below run, but are wrong.
Find each bug, then write the fixed versions `debug_circuits` and `debug_training_loss`.
`train_tiny` lets you train a small max-of-K model with any loss function and look at the
result, to see each training bug's symptom for yourself.

Part 7 proves lower bounds on the model's accuracy: the brute-force verdicts, the pessimal
ablation step, the cubic proof and the rank-one score-gap floor of the subcubic proof.
"""
import math

import torch


# --------------------------------------------------------------------------- 1. mean + diff
def mean_diff_positions(W_pos: "Float[Tensor, 'n_ctx d_model']"):
    """Split the positional embeddings into their mean and the deviations from it.

    Returns (P_avg [d_model], P_hat [n_ctx, d_model]) with W_pos[i] = P_avg + P_hat[i].

    Difficulty 1 (easy), about 5 minutes.
    """
    raise NotImplementedError("not implemented yet")


# --------------------------------------------------------------------------- 2. QK circuit
def eqke(W_E: "Float[Tensor, 'd_vocab d_model']", W_pos: "Float[Tensor, 'n_ctx d_model']",
         W_Q: "Float[Tensor, 'd_model d_head']", W_K: "Float[Tensor, 'd_model d_head']"):
    """EQKE = E_q W_Q W_K^T E_bar^T / sqrt(d_head): [d_vocab (query token), d_vocab (key token)].

    E_q = W_E + W_pos[-1] (the query sits at the last position); E_bar = W_E + P_avg.

    Difficulty 2 (medium), about 15 minutes.

    Hints:
      * The model divides q.k by sqrt(d_head), not by d_head.
      * Rows are the query token, columns the key token.
    """
    raise NotImplementedError("not implemented yet")


def eqkp(W_E: "Float[Tensor, 'd_vocab d_model']", W_pos: "Float[Tensor, 'n_ctx d_model']",
         W_Q: "Float[Tensor, 'd_model d_head']", W_K: "Float[Tensor, 'd_model d_head']"):
    """EQKP = E_q W_Q W_K^T P_hat^T / sqrt(d_head): [d_vocab (query token), n_ctx (key position)].

    Difficulty 2 (medium), about 10 minutes.

    Hints:
      * P_hat, not W_pos: the mean P_avg is already on the key side, inside E_bar.
    """
    raise NotImplementedError("not implemented yet")


# --------------------------------------------------------------------------- 3. OV circuit and direct path
def eu(W_E: "Float[Tensor, 'd_vocab d_model']", W_pos: "Float[Tensor, 'n_ctx d_model']",
       W_U: "Float[Tensor, 'd_model d_vocab']"):
    """EU = E_q W_U: the direct path, [d_vocab (query token), d_vocab (output logit)].

    Difficulty 1 (easy), about 5 minutes.
    """
    raise NotImplementedError("not implemented yet")


def evou(W_E: "Float[Tensor, 'd_vocab d_model']", W_pos: "Float[Tensor, 'n_ctx d_model']",
         W_V: "Float[Tensor, 'd_model d_head']", W_O: "Float[Tensor, 'd_head d_model']",
         W_U: "Float[Tensor, 'd_model d_vocab']"):
    """EVOU = E_bar W_V W_O W_U: [d_vocab (attended token), d_vocab (output logit)].

    Difficulty 1 (easy), about 5 minutes.
    """
    raise NotImplementedError("not implemented yet")


def pvou(W_pos: "Float[Tensor, 'n_ctx d_model']", W_V: "Float[Tensor, 'd_model d_head']",
         W_O: "Float[Tensor, 'd_head d_model']", W_U: "Float[Tensor, 'd_model d_vocab']"):
    """PVOU = P_hat W_V W_O W_U: [n_ctx (attended position), d_vocab (output logit)].

    Difficulty 1 (easy), about 5 minutes.
    """
    raise NotImplementedError("not implemented yet")


# --------------------------------------------------------------------------- 4. logits from the tables
def logits_from_circuits(tokens: "Int[Tensor, 'batch n_ctx']", W_E, W_pos, W_Q, W_K, W_V, W_O, W_U):
    """The last position's logits [batch, d_vocab], computed from the five tables only:

        EU[x_q] + sum_i softmax_i(EQKE[x_q, x_i] + EQKP[x_q, i]) * (EVOU[x_i] + PVOU[i])

    tokens [batch, n_ctx] (full-length sequences); the other arguments as above.

    Difficulty 2 (medium), about 20 minutes.

    Hints:
      * Fancy indexing does the lookups: EQKE[x_q[:, None], tokens] is [batch, n_ctx].
      * The softmax runs over the key positions (the last axis).
    """
    raise NotImplementedError("not implemented yet")


# --------------------------------------------------------------------------- 5. the SVD view
def eqke_rank_one(eqke: "Float[Tensor, 'd_vocab d_vocab']"):
    """EQKE is nearly rank one. Return (sigma1 / sigma2, size_direction, query_direction):

      * sigma1 / sigma2: a Python float, the largest singular value over the second largest;
      * size_direction [d_vocab]: the first RIGHT singular vector (over key tokens), unit norm,
        signed so that it correlates positively with the token index 0, 1, ..., d_vocab - 1;
      * query_direction [d_vocab]: the first LEFT singular vector (over query tokens), unit norm,
        signed so that EQKE ~ sigma1 * outer(query_direction, size_direction) with sigma1 > 0.

    Return the directions in the dtype of `eqke`.

    Difficulty 2 (medium), about 15 minutes.

    Hints:
      * torch.linalg.svd returns U, S, Vh with M = U diag(S) Vh; the signs of a pair (U[:, 0],
        Vh[0]) are arbitrary, and flipping both leaves the product unchanged.
      * sigma2 is tiny next to sigma1 in a trained model: float64 helps.
    """
    raise NotImplementedError("not implemented yet")


# --------------------------------------------------------------------------- 6. bug lab
def buggy_circuits(W_E, W_pos, W_Q, W_K, W_V, W_O, W_U):
    """GIVEN (not graded): the circuits function behind the notes' heatmaps. It has three bugs.

    Symptoms on the trained model: "EQKE is 0.1x expected", "EQKP is 10x expected".
    """
    d_head = W_Q.shape[1]
    P_avg = W_pos.mean(dim=0)
    P_hat = W_pos - P_avg
    E_q = W_E
    E_bar = W_E + P_avg
    QK = W_Q @ W_K.T
    OVU = W_V @ W_O @ W_U
    EQKE = E_q @ QK @ E_bar.T / d_head
    EQKP = E_q @ QK @ W_pos.T / d_head
    EU = E_q @ W_U
    EVOU = E_bar @ OVU
    PVOU = P_hat @ OVU
    return EQKE, EQKP, EU, EVOU, PVOU


def debug_circuits(W_E, W_pos, W_Q, W_K, W_V, W_O, W_U):
    """Fix `buggy_circuits`: return the correct (EQKE, EQKP, EU, EVOU, PVOU).

    Shapes: EQKE [d_vocab, d_vocab], EQKP [d_vocab, n_ctx], EU [d_vocab, d_vocab],
    EVOU [d_vocab, d_vocab], PVOU [n_ctx, d_vocab].

    Difficulty 2 (medium), about 20 minutes. The grader tells you which bugs are still there.
    """
    raise NotImplementedError("not implemented yet")


def buggy_training_loss(tokens, W_E, W_pos, W_Q, W_K, W_V, W_O, W_U):
    """GIVEN (not graded): the loss of the trainer the notes came from. It has two bugs.

    Symptom: the trained model's EU grows a copying diagonal, and its EQKE comes out small.
    """
    n = tokens.shape[1]
    d_head = W_Q.shape[1]
    resid = W_E[tokens] + W_pos[:n]
    q, k, v = resid @ W_Q, resid @ W_K, resid @ W_V
    scores = q @ k.transpose(1, 2) * math.sqrt(d_head)
    causal = torch.ones(n, n, dtype=torch.bool, device=tokens.device).triu(1)
    pattern = scores.masked_fill(causal, float("-inf")).softmax(dim=-1)
    logits = (resid + (pattern @ v) @ W_O)[:, -1] @ W_U
    return torch.nn.functional.cross_entropy(logits, tokens[:, -1])


def debug_training_loss(tokens: "Int[Tensor, 'batch n_ctx']", W_E, W_pos, W_Q, W_K, W_V, W_O, W_U):
    """Fix `buggy_training_loss`: the mean cross-entropy of the last position's logits against
    the max token of each sequence, as a 0-d tensor (keep it differentiable: train_tiny calls
    .backward() on it).

    Difficulty 2 (medium), about 15 minutes. The grader tells you which bugs are still there.
    """
    raise NotImplementedError("not implemented yet")


def train_tiny(loss_fn, steps=1500, d_vocab=64, n_ctx=4, d_model=32, seed=0):
    """GIVEN (not graded): train a max-of-K-shaped model with `loss_fn` and return its weights.

    loss_fn(tokens, W_E, W_pos, W_Q, W_K, W_V, W_O, W_U) -> 0-d tensor. Takes a few seconds.
    Then look at e.g. eu(...).argmax(1) == torch.arange(d_vocab) (a copying diagonal?) or at
    eqke(...).abs().max() for the trained weights, with the buggy and with your fixed loss.
    """
    gen = torch.Generator().manual_seed(seed)
    shapes = {"W_E": (d_vocab, d_model), "W_pos": (n_ctx, d_model), "W_Q": (d_model, d_model),
              "W_K": (d_model, d_model), "W_V": (d_model, d_model), "W_O": (d_model, d_model),
              "W_U": (d_model, d_vocab)}
    weights = {k: (torch.randn(*s, generator=gen) / math.sqrt(d_model)).requires_grad_()
               for k, s in shapes.items()}
    order = ["W_E", "W_pos", "W_Q", "W_K", "W_V", "W_O", "W_U"]
    optimizer = torch.optim.AdamW(weights.values(), lr=1e-3)
    for _ in range(steps):
        tokens = torch.randint(0, d_vocab, (128, n_ctx), generator=gen)
        loss = loss_fn(tokens, *(weights[k] for k in order))
        optimizer.zero_grad()
        loss.backward()
        optimizer.step()
    return {k: w.detach() for k, w in weights.items()}


# --------------------------------------------------------------------------- 7. compact proofs
# A proof certifies inputs on which the max token's logit is STRICTLY the largest: an input whose
# top logits tie counts as wrong. The five tables: EQKE [V (query), V (key)], EQKP [V, n_ctx],
# EU [V (query), V (logit)], EVOU [V (attended token), V (logit)], PVOU [n_ctx, V (logit)].


def strictly_correct_inputs(EQKE, EQKP, EU, EVOU, PVOU):
    """Brute force: bool tensor [d_vocab] * n_ctx; entry [x_0, ..., x_{n-1}] is True when, on that
    input, the max token's logit is strictly larger than every other logit.

    Difficulty 2 (medium), about 20 minutes.

    Hints:
      * torch.cartesian_prod lists every input, the first token varying slowest.
      * A tie is wrong: compare with a strict > against the largest of the OTHER logits.
    """
    raise NotImplementedError("not implemented yet")


def pessimal_ablation_bound(g, b, w_lo):
    """The smallest value of w * g + (1 - w) * b over every weight w in [w_lo, 1] (elementwise).

    g: the worst value a max position writes; b: the worst value any other position writes;
    w_lo: the least attention the max positions can get. Difficulty 1 (easy), about 10 minutes.

    Hint: the expression is linear in w.
    """
    raise NotImplementedError("not implemented yet")


def cubic_bound(EQKE, EQKP, EU, EVOU, PVOU):
    """The cubic proof. Return out [m, q, c] (float, shape [V, V, V]): a lower bound on
    min_{o != m} (logit_m - logit_o) valid for EVERY input whose max is m, whose last token is q
    and whose largest token below m is c (c = m: every token is m). Groups that hold no input
    (e.g. q > m) are ignored: put +inf there.

    Difficulty 3 (hard), about 45 minutes. The lesson's step "The cubic proof" walks through it.

    Hints:
      * The attention weights sum to 1, so the margin over o is
        sum_i p_i (EU[q, m] - EU[q, o] + EVOU[x_i, m] - EVOU[x_i, o] + PVOU[i, m] - PVOU[i, o]).
        Bound each position's term by its worst o: exactly for the positions holding m and for
        the query token; for the other positions take the direct path's worst o plus the value's
        worst o and worst token t <= c (pessimal ablation).
      * The attention on the positions holding m is smallest when every other key scores
        max_{t <= c} EQKE[q, t] (+ EQKP). Which positions hold m is unknown: try every set.
      * Combine with your pessimal_ablation_bound. The grader accepts any SOUND bound at least
        as tight as the lesson's, and names an input that breaks an unsound one.
    """
    raise NotImplementedError("not implemented yet")


def rank_one_residual_bound(EQKE):
    """gap [m, c] (shape [V, V]; zero where c >= m): a number with
    EQKE[q, m] - EQKE[q, t] >= gap[m, c] for EVERY query q and every key t <= c < m,
    computed from EQKE = sigma1 u v^T + R (first singular triple) and rho = max |R|.

    Difficulty 2 (medium), about 25 minutes.

    Hints:
      * sigma1 u_q (v_m - v_t) + (R[q, m] - R[q, t]), and |R[q, m] - R[q, t]| <= 2 rho.
      * For x = v_m - v_t >= 0 the worst query has the smallest u_q; for x < 0 the largest.
    """
    raise NotImplementedError("not implemented yet")
