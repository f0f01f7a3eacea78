"""Raw logs -> prepared data sets (TFRecord shards + schema.json + stats.json).

One module per data set (`python -m data_prep.<name> --out DIR ...`); the shared
two-pass writer is `data_prep.writer`.

Preparing data imports only stem_tfrs' light modules (schema, files, errors):
never TensorFlow Recommenders, the models, training or export, which every
worker process would otherwise load for nothing (`stem_tfrs` loads its public
API lazily; tests/test_data_prep_imports.py checks it).
"""

import stem_tfrs  # noqa: F401  (sets TF_USE_LEGACY_KERAS before TensorFlow loads)
