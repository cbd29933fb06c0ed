"""Posterior draws -> per-customer and per-segment predictions with credible and predictive intervals."""

from clvbayes.predict.clv import CustomerScores, joint_draws, score_customers
from clvbayes.predict.retention import SubscriberScores, score_subscribers
from clvbayes.predict.summary import DEFAULT_PROB, draw_stats, summarize_draws, tail_probs

__all__ = [
    "DEFAULT_PROB",
    "CustomerScores",
    "SubscriberScores",
    "draw_stats",
    "joint_draws",
    "score_customers",
    "score_subscribers",
    "summarize_draws",
    "tail_probs",
]
