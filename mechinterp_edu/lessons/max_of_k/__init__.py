"""Lesson 4: circuits of a max-of-K model; owns the max_of_4 toy model."""
