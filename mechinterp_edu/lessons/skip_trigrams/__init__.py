"""Lesson 3: planted skip-trigrams and their recovery; owns the skip_trigrams toy model."""
