"""Evaluation suite: metrics and tasks for judging the attractor against baselines."""

from attractor_jax.evals.metrics import (
    distinct_n,
    rep_l,
    repetition_by_position,
    seq_rep_n,
    snap_back_share,
    window_drift,
)
from attractor_jax.evals.tasks import (
    ChoiceItem,
    ClozeItem,
    FactItem,
    TopicSwitch,
    cloze_items,
    comprehension_items,
    fact_recall_items,
    kv_recall_grid,
    kv_recall_items,
    topic_switch_prompts,
)

__all__ = [
    "ChoiceItem",
    "ClozeItem",
    "FactItem",
    "TopicSwitch",
    "cloze_items",
    "comprehension_items",
    "distinct_n",
    "fact_recall_items",
    "kv_recall_grid",
    "kv_recall_items",
    "rep_l",
    "repetition_by_position",
    "seq_rep_n",
    "snap_back_share",
    "topic_switch_prompts",
    "window_drift",
]
