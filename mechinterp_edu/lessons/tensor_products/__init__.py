"""Lesson 1: a one-layer attention-only transformer written as tensor products."""
