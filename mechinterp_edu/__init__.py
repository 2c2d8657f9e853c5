"""mechinterp-edu: a self-paced course, autograder and teaching app for the
mechanistic interpretability of transformers.

Conventions used everywhere in this package (TransformerLens's):
row vectors, ``x @ W``; weights in TransformerLens shapes
(W_E [d_vocab, d_model], W_pos [n_ctx, d_model], W_Q/W_K/W_V [n_heads, d_model, d_head],
W_O [n_heads, d_head, d_model], W_U [d_model, d_vocab]).
"""

__version__ = "0.1.0"
