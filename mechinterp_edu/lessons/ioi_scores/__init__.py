"""Lesson 5: IO/S1 decomposition of attention scores; owns the ioi_small model and IOI data."""
