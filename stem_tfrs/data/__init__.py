"""The prepared data set, as the model reads it.

- `schema`: the data set's description (schema.json, stats.json): features,
  vocabularies, tasks, splits.
- `records`: the shard record format, defined once: `encode_records` writes the
  records data_prep puts in the shards, `parse_records` reads them back.
- `shards`: checks that a split's shards are readable, of the schema's columns
  and whole.
- `pipeline`: `make_dataset`, the tf.data pipeline over the shards.

Nothing is imported here: data_prep imports `schema` and `records` in every
worker process, and must not pay for the rest.
"""
