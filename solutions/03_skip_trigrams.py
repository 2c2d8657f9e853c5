"""Lesson 3 worked solutions: skip-trigrams, planted and recovered.

Read top to bottom. The enumerators are plain loops that follow the definition word for
word; the scores are built one table at a time, one head at a time, with every product
written out. (The course's reference does the same with tril_indices and one einsum over
all heads; the tests check that both agree.)

Shapes (TransformerLens, row vectors, x @ W):
    W_E [d_vocab, d_model], W_pos [n_ctx, d_model]
    W_Q, W_K, W_V [n_heads, d_model, d_head], W_O [n_heads, d_head, d_model]
    W_U [d_model, d_vocab]
"""
import math

import torch


def skip_trigrams_in(tokens: list[int]) -> set[tuple[int, int, int]]:
    """Every (A, B, C) = (tokens[j], tokens[i], tokens[i + 1]) with 0 <= j < i <= len - 2.

    Difficulty 1, about 10 minutes.
    """
    tokens = [int(t) for t in tokens]
    found = set()
    # The destination i is where the model reads B and must predict the next token, so i
    # needs a next token: i + 1 <= len(tokens) - 1. It also needs at least one earlier
    # position to attend to, so i starts at 1.
    for i in range(1, len(tokens) - 1):
        B = tokens[i]
        C = tokens[i + 1]                     # the NEXT token, not the one at i
        for j in range(i):                    # strictly earlier sources: j < i
            A = tokens[j]
            found.add((A, B, C))              # token values, not the positions (j, i, i + 1)
    return found


def skip_trigrams_at_step(tokens: list[int], step: int) -> list[tuple[int, int, int]]:
    """The notes' enumerator, corrected: (t[j], t[j+1+step], t[j+2+step]) for every j, in order.

    Difficulty 1, about 10 minutes.

    What changed from the notes: (1) loop over positions 0..len-1, not over the values of the
    sequence (they coincide only for range(n)); (2) look the tokens up at those positions
    instead of printing the positions; (3) return a list instead of printing.
    The notes' bound (j < len - 2 - step) was right: the last index used, j + 2 + step, must
    be at most len - 1.
    """
    tokens = [int(t) for t in tokens]
    if step < 0:
        raise ValueError(f"step must be >= 0, got {step}")
    out = []
    for j in range(len(tokens)):
        i = j + 1 + step                      # B skips `step` tokens after A
        if i + 1 > len(tokens) - 1:           # C = tokens[i + 1] must exist
            break
        out.append((tokens[j], tokens[i], tokens[i + 1]))
    return out


def skip_trigram_scores(W_E, W_pos, W_Q, W_K, W_V, W_O, W_U, head: int) -> torch.Tensor:
    """S[A, B, C] = attn[B, A] * ov[A, C] for one head: [d_vocab (A), d_vocab (B), d_vocab (C)].

    Difficulty 2, about 20 minutes.
    """
    n_ctx = W_pos.shape[0]
    d_head = W_Q.shape[-1]

    # 1. Every token at the average position. Averaging the bilinear QK score over query and
    #    key positions independently is exactly the same as using the mean positional row.
    p_bar = W_pos.mean(dim=0)                          # [d_model]
    x = W_E + p_bar                                    # [d_vocab, d_model]

    # 2. QK: the score destination token B gives source token A, scaled like the model does.
    queries = x @ W_Q[head]                            # [d_vocab (B), d_head]
    keys = x @ W_K[head]                               # [d_vocab (A), d_head]
    s = queries @ keys.T / math.sqrt(d_head)           # [B, A]

    # 3. The background: n - 1 keys holding the average token. By linearity its score is the
    #    row mean of s. A's share of the attention against them is a logistic function.
    s_background = s.mean(dim=1, keepdim=True)         # [B, 1]
    others = max(n_ctx - 1, 1)
    attn = torch.sigmoid(s - s_background - math.log(others))   # [B, A]

    # 4. OV: how attending to A moves each logit C.
    ov = x @ W_V[head] @ W_O[head] @ W_U               # [A, C]
    #    Compared with attending to the average token (mean over A) ...
    ov = ov - ov.mean(dim=0, keepdim=True)
    #    ... and ignoring what moves every logit equally (softmax does not see it).
    ov = ov - ov.mean(dim=1, keepdim=True)

    # 5. Combine: S[A, B, C] = attn[B, A] * ov[A, C]. attn.T is [A, B].
    return attn.T[:, :, None] * ov[:, None, :]


def top_skip_trigrams(W_E, W_pos, W_Q, W_K, W_V, W_O, W_U, k: int) -> list[tuple[int, int, int]]:
    """The k (A, B, C) with the largest score summed over heads, best first.

    Difficulty 2, about 15 minutes.
    """
    # Heads write into the same residual stream, so their effects on a logit add up.
    total = None
    for h in range(W_Q.shape[0]):
        S = skip_trigram_scores(W_E, W_pos, W_Q, W_K, W_V, W_O, W_U, h)
        total = S if total is None else total + S
    d_vocab = total.shape[0]
    values, flat = torch.topk(total.reshape(-1), k)    # best first
    triples = []
    for index in flat.tolist():
        A = index // (d_vocab * d_vocab)               # undo the row-major flattening
        B = (index // d_vocab) % d_vocab
        C = index % d_vocab
        triples.append((A, B, C))
    return triples
