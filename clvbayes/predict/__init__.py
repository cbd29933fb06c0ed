"""Posterior draws -> per-customer and per-segment predictions with credible and predictive intervals."""

from clvbayes.predict.clv import CustomerScores, joint_draws, score_customers
from clvbayes.predict.summary import DEFAULT_PROB, draw_stats, summarize_draws, tail_probs

__all__ = [
    "DEFAULT_PROB",
    "CustomerScores",
    "draw_stats",
    "joint_draws",
    "score_customers",
    "summarize_draws",
    "tail_probs",
]
