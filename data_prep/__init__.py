"""Raw logs -> prepared data sets (TFRecord shards + schema.json + stats.json).

One module per data set (`python -m data_prep.<name> --out DIR ...`); the shared
two-pass writer is `data_prep.writer`.
"""

import stem_tfrs  # noqa: F401  (sets TF_USE_LEGACY_KERAS before TensorFlow loads)
