"""Evaluation suite: metrics and tasks for judging the attractor against baselines."""

from attractor_jax.evals.metrics import (
    distinct_n,
    rep_l,
    repetition_by_position,
    seq_rep_n,
    snap_back_share,
    window_drift,
)

__all__ = [
    "distinct_n",
    "rep_l",
    "repetition_by_position",
    "seq_rep_n",
    "snap_back_share",
    "window_drift",
]
