"""Metrics of a trained model, and the paper's analyses of them.

- `metrics`: exact logloss, AUC and gAUC per task and split (`evaluate`), and
  the predictions they are computed from.
- `analysis`: the comparable-sample report (users whose tasks disagree) and the
  gates' expert shares, as the STEM paper reports them.
"""

from stem_tfrs.evaluation.metrics import (Metrics, auc, compute_metrics, evaluate, format_table,
                                          group_auc, logloss, predict, predict_with)

__all__ = ["Metrics", "auc", "compute_metrics", "evaluate", "format_table", "group_auc",
           "logloss", "predict", "predict_with"]
