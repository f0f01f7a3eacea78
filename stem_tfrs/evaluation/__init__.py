"""Metrics of a trained model, and the paper's analyses of them.

- `metrics`: exact logloss, AUC and gAUC per task and split (`evaluate`), and
  the predictions they are computed from.
- `analysis`: the comparable-sample report (users whose tasks disagree) and the
  gates' expert shares, as the STEM paper reports them.
- `intervals`: how sure a difference between two models is: an interval paired
  by seed and a paired bootstrap over test rows, with a verdict.
- `results_page`: the markdown page (and plots) of a model comparison's
  results.json (`python -m stem_tfrs.evaluation.results_page`).
"""

from stem_tfrs.evaluation.metrics import (Metrics, auc, compute_metrics, evaluate, format_table,
                                          group_auc, logloss, predict, predict_with)

__all__ = ["Metrics", "auc", "compute_metrics", "evaluate", "format_table", "group_auc",
           "logloss", "predict", "predict_with"]
