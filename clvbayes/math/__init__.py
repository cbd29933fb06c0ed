"""Closed-form model mathematics in NumPy/SciPy, one file per model (no PyMC here).

Each module holds a model's log-likelihood (written once over the array namespace of
:mod:`clvbayes.math._xp`, so PyMC reuses it), its predictive formulas and its simulator.
"""
