"""Lesson 2: QK and OV circuits of the skip_trigrams model."""
