"""A hand-built 2-layer GPT-2 whose head 1.0 is a copy-suppression head by construction.

Names 1..N (token 0 is <bos>) get orthonormal, zero-mean embedding directions e_X and separate
unembedding directions f_X (untied). MLP0 writes gamma f_succ(X) at a position holding X (a
successor table), so the logit lens after block 0 predicts succ(X). Head 1.0 has
W_Q = beta sum_X f_X e_X^T and W_K = sum_X e_X e_X^T: the query made of f_X matches the key of a
position holding X. W_V W_O = -c sum_X e_X f_X^T: attending to X writes -f_X. ``sign=+1`` flips
the OV into a copying head (the control).
"""
from __future__ import annotations

import torch

N_NAMES, D = 16, 64


def successor(i: int) -> int:
    return (3 * i + 1) % N_NAMES


def build_hand_model(sign: float = -1.0, gamma: float = 2.0, beta: float = 3.0, c: float = 1.0, seed: int = 0):
    from transformers import GPT2Config, GPT2LMHeadModel

    from mechinterp_edu.models.gpt2 import wrap_gpt2

    gen = torch.Generator().manual_seed(seed)
    raw = torch.randn(D, D, generator=gen, dtype=torch.float64)
    raw = raw - raw.mean(0, keepdim=True)                # columns orthogonal to the all-ones vector
    basis = torch.linalg.qr(raw)[0][:, : 2 * N_NAMES + 2].T   # zero-mean orthonormal rows
    e, f = basis[:N_NAMES], basis[N_NAMES: 2 * N_NAMES]
    e_bos, f_bos = basis[-2], basis[-1]
    cfg = GPT2Config(vocab_size=N_NAMES + 1, n_positions=N_NAMES + 1, n_embd=D, n_layer=2, n_head=1,
                     n_inner=N_NAMES, activation_function="gelu_new", resid_pdrop=0.0, embd_pdrop=0.0,
                     attn_pdrop=0.0, tie_word_embeddings=False, bos_token_id=0, eos_token_id=0)
    model = GPT2LMHeadModel(cfg)
    succ = torch.tensor([successor(i) for i in range(N_NAMES)])
    with torch.no_grad():
        for p in model.parameters():
            p.zero_()
        for name, p in model.named_parameters():
            if name.endswith(("ln_1.weight", "ln_2.weight", "ln_f.weight")):
                p.fill_(1.0)
        model.transformer.wte.weight.copy_(torch.cat([e_bos[None], e]).float())
        model.lm_head.weight.copy_(torch.cat([f_bos[None], f]).float())
        mlp = model.transformer.h[0].mlp                      # neuron i fires on e_i (LN makes it 8 e_i)
        mlp.c_fc.weight.copy_(e.T.float())
        mlp.c_fc.bias.fill_(-4.0)
        gelu4 = torch.nn.functional.gelu(torch.tensor(4.0), approximate="tanh")
        mlp.c_proj.weight.copy_((gamma / gelu4 * f[succ]).float())
        attn = model.transformer.h[1].attn
        W_Q, W_K = beta * f.T @ e, e.T @ e
        W_V, W_O = e.T @ e, sign * c * e.T @ f
        attn.c_attn.weight.copy_(torch.cat([W_Q, W_K, W_V], 1).float())
        attn.c_proj.weight.copy_(W_O.float())
    bridge = wrap_gpt2(model.eval(), compat=True)
    return bridge, torch.arange(1, N_NAMES + 1)


def hand_prompts(n: int, length: int = 12, seed: int = 0):
    """Lists of distinct names (<bos> first) and a next name that is not in the list."""
    gen = torch.Generator().manual_seed(seed)
    perms = torch.stack([torch.randperm(N_NAMES, generator=gen) for _ in range(n)]) + 1
    return torch.cat([torch.zeros(n, 1, dtype=torch.long), perms[:, :length]], 1), perms[:, length]
