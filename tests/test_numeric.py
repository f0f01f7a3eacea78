"""Numeric features: data_prep's statistics and shards, the pipeline, the layer, serving."""

import numpy as np
import pandas as pd
import pytest
import tensorflow as tf

from data_prep.writer import BadRows, Chunk, DataError, prepare
from stem_tfrs import build_model, export_saved_model, make_dataset
from stem_tfrs.layers import NumericInputs
from stem_tfrs.models import global_dtype_policy
from stem_tfrs.data.schema import NumericFeature, Schema, SchemaError
from stem_tfrs.serving import warmup

from tests.support import tiny_model_config
from tests.cli_cases import run_here
from tests.test_main import assert_clean_error

ROWS = 1500


def raw_frame(rows=ROWS, seed=0):
  """Logs with ids, a heavy-tailed count `views` and a duration `seconds`; click follows views."""
  rng = np.random.default_rng(seed)
  views = rng.lognormal(3.0, 2.0, rows)
  seconds = rng.normal(30.0, 5.0, rows)
  click = rng.random(rows) < 1 / (1 + np.exp(-(np.log1p(views) - 3.0)))
  frame = pd.DataFrame({
      "uid": [f"u{i % 40}" for i in range(rows)], "item": [f"i{i % 60}" for i in range(rows)],
      "views": [f"{v:.3f}" for v in views], "seconds": [f"{s:.3f}" for s in seconds],
      "click": click.astype(int).astype(str),
      "like": (rng.random(rows) < 0.2).astype(int).astype(str)},
      index=range(2, rows + 2))
  frame.loc[4, "views"] = ""          # missing
  frame.loc[6, "seconds"] = "inf"     # not finite: missing
  frame.loc[8, "views"] = "many"      # a bad row
  return frame


def prepare_numeric(out, rows_per_record=64, frame=None, bad_rows=None):
  frame = raw_frame() if frame is None else frame
  return prepare(lambda: iter([Chunk(frame, "logs.csv")]), features=["uid", "item"],
                 labels=["click", "like"], group_column="uid", out_dir=str(out),
                 numeric=["views", "seconds"], log1p=["views"], min_count=1,
                 rows_per_record=rows_per_record, bad_rows=bad_rows or BadRows())


@pytest.fixture(scope="module")
def numeric_data(tmp_path_factory):
  out = tmp_path_factory.mktemp("numeric") / "data"
  bad = BadRows()
  prepare_numeric(out, bad_rows=bad)
  return Schema.load(str(out)), bad


def column(schema, split, name, **kwargs):
  return np.concatenate([f[name].numpy() for f, _ in make_dataset(schema, split, 256, **kwargs)])


def test_statistics_come_from_the_train_split_and_bad_values_are_bad_rows(numeric_data):
  schema, bad = numeric_data
  assert bad.counts == {"unparsable number": 1}
  assert bad.examples["unparsable number"][0] == (
      "logs.csv line 8: column 'views': 'many' is not a number")
  views, seconds = schema.numeric_features
  assert (views.name, views.log1p, seconds.name, seconds.log1p) == ("views", True,
                                                                     "seconds", False)
  train_views = column(schema, "train", "views")
  train_seconds = column(schema, "train", "seconds")
  assert np.isnan(train_views).sum() + np.isnan(column(schema, "valid", "views")).sum() + \
      np.isnan(column(schema, "test", "views")).sum() == 1   # the empty field, as NaN
  logged = np.log1p(train_views[~np.isnan(train_views)])
  assert views.mean == pytest.approx(logged.mean(), rel=1e-5)
  assert views.std == pytest.approx(logged.std(), rel=1e-4)
  finite = train_seconds[np.isfinite(train_seconds)]
  assert seconds.mean == pytest.approx(finite.mean(), rel=1e-5)
  assert schema.input_names == ["uid", "item", "views", "seconds"]
  assert Schema.from_json(schema.to_json()).numeric_features == schema.numeric_features


@pytest.mark.slow
def test_one_row_records_and_memory_give_the_same_values(numeric_data, tmp_path):
  schema, _ = numeric_data
  prepare_numeric(tmp_path / "rows", rows_per_record=1)
  rows = Schema.load(str(tmp_path / "rows"))
  for split in ("train", "test"):
    blocks = np.sort(column(schema, split, "seconds"))
    np.testing.assert_array_equal(np.sort(column(rows, split, "seconds")), blocks)
    np.testing.assert_array_equal(np.sort(column(schema, split, "seconds", in_memory=True)),
                                  blocks)


def test_the_layer_standardizes_and_feeds_missing_values_as_the_mean():
  layer = NumericInputs([{"name": "views", "mean": 2.0, "std": 0.5, "log1p": True},
                         {"name": "seconds", "mean": 30.0, "std": 5.0, "log1p": False}])
  out = layer({"views": tf.constant([np.e - 1, -(np.e - 1), np.nan, np.inf]),
               "seconds": tf.constant([35.0, 20.0, np.inf, np.nan]),
               "uid": tf.constant(["a", "b", "c", "d"])}).numpy()
  np.testing.assert_allclose(out, [[-2.0, 1.0], [-6.0, -2.0], [0.0, 0.0], [0.0, 0.0]],
                             rtol=1e-6)
  assert NumericInputs.from_config(layer.get_config()).get_config() == layer.get_config()
  with pytest.raises(SchemaError, match=r"numeric feature 'x': mean must be finite and std "
                                        r"finite and > 0"):
    NumericFeature("x", mean=0.0, std=0.0)


def test_a_column_both_categorical_and_numeric_is_refused(tmp_path):
  with pytest.raises(DataError, match=r"column\(s\) \['item'\] named more than once among "
                                      r"the features, numeric features and tasks"):
    prepare(lambda: iter([Chunk(raw_frame(50), "x")]), features=["uid", "item"],
            labels=["click"], group_column=None, out_dir=str(tmp_path / "out"),
            numeric=["item"])
  assert not (tmp_path / "out").exists()


@pytest.mark.slow
@pytest.mark.parametrize("name", ["stem", "mmoe", "ple"])
def test_models_learn_from_a_numeric_feature_and_serve_it(numeric_data, tmp_path, name):
  schema, _ = numeric_data
  tf.keras.utils.set_random_seed(1)
  model = build_model(name, schema, tiny_model_config())
  model.compile(optimizer=tf.keras.optimizers.Adam(1e-2))
  model.fit(make_dataset(schema, "train", 128, shuffle=True, seed=1), epochs=4, verbose=0)
  # click rises with views, which no id predicts: the model must read the numeric input.
  features, labels = next(iter(make_dataset(schema, "test", 4096)))
  views = features["views"].numpy()
  clicks = model(features)["click"].numpy()
  known = ~np.isnan(views)
  assert np.corrcoef(np.log1p(views[known]), clicks[known])[0, 1] > 0.5

  path = export_saved_model(model, schema, str(tmp_path / "export"), name)
  serve = tf.saved_model.load(path).signatures["serving_default"]
  _, inputs = serve.structured_input_signature
  assert inputs["views"] == tf.TensorSpec([None], tf.float32, name="views")
  request = {"uid": tf.constant(["u1", "never-seen"]), "item": tf.constant(["i1", "i2"]),
             "views": tf.constant([50.0, np.nan]), "seconds": tf.constant([np.inf, 31.0])}
  served = serve(**request)
  expected = model(request)
  for task in schema.tasks:
    np.testing.assert_allclose(served[task].numpy(), expected[task].numpy(), atol=1e-6)
    assert np.isfinite(served[task].numpy()).all()
  replayed = warmup.read_warmup(f"{path}/assets.extra/tf_serving_warmup_requests")
  assert replayed[0]["views"].dtype == tf.float32
  for request in replayed:
    serve(**request)
  with pytest.raises((TypeError, ValueError)):
    serve(**dict(request, views=tf.constant(["1.0"] * int(request["views"].shape[0]))))


@pytest.mark.slow
def test_predict_command_reads_numbers_and_names_a_cell_that_is_not_one(numeric_data, tmp_path):
  schema, _ = numeric_data
  model = build_model("stem", schema, tiny_model_config())
  path = export_saved_model(model, schema, str(tmp_path / "export"), "stem",
                            warmup_batches=[])  # no warmup file: read by no request here
  (tmp_path / "rows.csv").write_text("uid,item,views,seconds\nu1,i1,12.5,30\nu2,i3,,\n")
  result = run_here("predict", f"--saved_model={path}", "--input=rows.csv",
                    "--output=scores.csv", cwd=tmp_path)
  assert result.returncode == 0, result.stderr[-3000:]
  scores = pd.read_csv(tmp_path / "scores.csv")
  expected = model({"uid": tf.constant(["u1", "u2"]), "item": tf.constant(["i1", "i3"]),
                    "views": tf.constant([12.5, np.nan]),
                    "seconds": tf.constant([30.0, np.nan])})
  np.testing.assert_allclose(scores["click"], expected["click"].numpy(), atol=1e-6)

  (tmp_path / "bad.csv").write_text("uid,item,views,seconds\nu1,i1,12.5,30\nu2,i3,lots,1\n")
  bad = run_here("predict", f"--saved_model={path}", "--input=bad.csv", "--output=bad_scores.csv",
                 cwd=tmp_path)
  assert_clean_error(bad, r"bad.csv line 3: column 'views' holds 'lots', not a number")


def test_logs_command_prepares_numeric_columns(tmp_path):
  frame = raw_frame(300)
  frame = frame[~frame["views"].isin(["many"])]
  (tmp_path / "logs.csv").write_text(frame.to_csv(index=False))
  result = run_here("prepare", "--dataset=logs", "--raw=logs.csv", "--out=data",
                    "--features=uid,item", "--tasks=click,like", "--numeric=views,seconds",
                    "--log1p=views", "--min_count=1", cwd=tmp_path)
  assert result.returncode == 0, result.stderr[-3000:]
  schema = Schema.load(str(tmp_path / "data"))
  assert [(f.name, f.log1p) for f in schema.numeric_features] == [("views", True),
                                                                  ("seconds", False)]


@pytest.mark.slow
def test_rest_and_grpc_clients_carry_numbers_and_missing_values(numeric_data, tmp_path):
  from stem_tfrs.serving.clients import GrpcClient, RestClient
  from stem_tfrs.serving.session import SavedModelSession
  from tests.standin_servers import Model, grpc_server, rest_server
  schema, _ = numeric_data
  model = build_model("mmoe", schema, tiny_model_config())
  path = export_saved_model(model, schema, str(tmp_path / "export"), "mmoe",
                            warmup_batches=[])  # no warmup file: read by no request here
  batch = {"uid": np.array(["u1", "u2", "u3"], dtype=object),
           "item": np.array(["i1", "i2", "i9"], dtype=object),
           "views": np.array([3.0, np.nan, 1e6], np.float32),
           "seconds": np.array([np.nan, 25.0, np.inf], np.float32)}
  expected = model({k: tf.constant(v) for k, v in batch.items()})
  served = Model(path, "mmoe")
  with rest_server(served) as address:  # NaN and Infinity, as TF Serving's REST API takes them
    rest = RestClient(address, "mmoe").predict(batch)
  with grpc_server(served) as address:
    client = GrpcClient(address, "mmoe")
    grpc = client.predict(batch)
    client.close()
  with SavedModelSession(path) as session:  # numbers from strided (non-contiguous) arrays too
    strided = {k: np.repeat(v, 2)[::2] if v.dtype == np.float32 else v for k, v in batch.items()}
    assert not strided["views"].flags.c_contiguous
    direct = session.predict(strided)
    with pytest.raises(ValueError, match="input 'views' takes float32, got float64"):
      session.request(dict(batch, views=batch["views"].astype(np.float64)))
  for task in schema.tasks:
    for served_probabilities in (rest, grpc, direct):
      np.testing.assert_allclose(served_probabilities[task], expected[task].numpy(), atol=1e-6)


def test_raw_values_stay_float32_under_a_mixed_policy(numeric_data):
  schema, _ = numeric_data
  layer = NumericInputs([{"name": "d", "mean": 1000.0, "std": 1.0, "log1p": False}])
  with global_dtype_policy("mixed_bfloat16"):
    # bfloat16 holds 1000 and 1001 as the same number: standardize first, then cast.
    np.testing.assert_array_equal(layer({"d": tf.constant([1000.0, 1001.0, 1003.0])}).numpy()
                                  .astype(np.float32).ravel(), [0.0, 1.0, 3.0])
    model = build_model("stem", schema, tiny_model_config())
  ids = {"uid": tf.constant(["u1", "u1"]), "item": tf.constant(["i1", "i1"]),
         "views": tf.constant([5.0, 5.0])}
  near = tf.constant([1024.0, 1028.0])  # one number in bfloat16, whose spacing at 1024 is 8
  standardize, seen = model.numeric.call, []
  model.numeric.call = lambda inputs: seen.append(inputs["seconds"]) or standardize(inputs)
  model(dict(ids, seconds=near))  # through the model's __call__, as fit and serving call it
  np.testing.assert_array_equal(seen[0].numpy(), [1024.0, 1028.0])


def test_a_numeric_column_without_spread_or_beyond_float32_is_handled(tmp_path):
  from stem_tfrs.data.schema import read_numbers
  values, bad = read_numbers(["1.5", "  ", "", "nan", "inf", "1e39", "-2e3", "1_000", "x"])
  np.testing.assert_array_equal(bad, [False] * 7 + [True, True])
  np.testing.assert_array_equal(values[[0, 6]], [1.5, -2000.0])
  assert np.isnan(values[1:6]).all()   # blank, nan, inf, beyond float32: missing

  frame = raw_frame(200)
  frame["seconds"] = "7"                 # one value: nothing to learn from
  with pytest.raises(DataError, match=r"numeric feature\(s\) \['seconds'\] hold no value, or a "
                                      r"single one"):
    prepare_numeric(tmp_path / "flat", frame=frame)
  assert not (tmp_path / "flat").exists()
  frame = raw_frame(200)
  frame.loc[10, "seconds"] = "1e39"      # a float64, beyond float32: missing, not in the mean
  prepare_numeric(tmp_path / "big", frame=frame)
  seconds = Schema.load(str(tmp_path / "big")).numeric_features[1]
  assert 20.0 < seconds.mean < 40.0 and seconds.std < 10.0
