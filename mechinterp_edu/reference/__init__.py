"""Reference implementations, written for speed and batching (einsum over heads and prompts).

They run on whatever device their inputs are on (the course device by default) and
accept float32 or float64. The worked solutions in ``solutions/`` are a second,
step-by-step implementation; tests show the two agree.
"""
