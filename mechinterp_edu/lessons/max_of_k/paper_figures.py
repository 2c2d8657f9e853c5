"""Gross et al. (2024)'s own max-of-4 figures, stored as data with their source, for the frontier chart.

Source to cite: J. Gross, R. Agrawal, T. Kwa, E. Ong, C. H. Yip, A. Gibson, S. Noubir, L. Chan,
"Compact Proofs of Model Performance via Mechanistic Interpretability", NeurIPS 2024,
arXiv:2406.11779 (its Table 1 / Figure 1 report, per proof category, the accuracy bound and the
estimated FLOPs over their 151 max-of-4 models); code: github.com/JasonGross/guarantees-based-
mechanistic-interpretability.

Status: EMPTY on purpose. The authors' repository holds the code that produces these numbers
(it writes them to LaTeX macro and CSV files at run time) but not the numbers themselves, and the
paper's table could not be read from any stored source during this work. Figures typed from
memory would be untraceable, so none are stored. To add them, copy each figure from the paper's
table with its table and row, one dict per strategy:

    {"strategy": "brute force", "kind": "brute", "bound": <mean bound>, "flops": <FLOPs>,
     "where": "Table 1, row 'Brute force'"}

The frontier chart and the lesson draw them beside ours as soon as this tuple is non-empty.
"""
from __future__ import annotations

PAPER_SOURCE = "Gross et al. 2024, arXiv:2406.11779, Table 1"

# How many max-of-4 models the paper proves bounds for: its abstract (151 small transformers,
# "151 random seeds" in later versions), and the authors' repository lists exactly 151 seeds in
# notebooks_jason/max_of_4_seeds.txt.
PAPER_N_MODELS = 151

PAPER_FIGURES: tuple[dict, ...] = ()
