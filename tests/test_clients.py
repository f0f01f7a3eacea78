"""REST and gRPC clients, and `python main.py predict`, against loopback stand-ins and the real SavedModel."""

import csv
import dataclasses
import json

import numpy as np
import pytest
import tensorflow as tf

from stem_tfrs import build_model
from stem_tfrs.serving.export import export_saved_model
from stem_tfrs.serving.clients import (GrpcClient, RestClient, ServingError,
                                       parse_rest_response, rest_request)

from tests.support import tiny_model_config
from tests.standin_servers import Model, grpc_server, rest_server
from tests.test_export import raw_batch
from tests.cli_cases import run_here
from tests.test_main import assert_clean_error


@pytest.fixture(scope="module")
def model(trained_run):
  return Model(trained_run.export_path, "stem")


@pytest.fixture(scope="module")
def batch(trained_run):
  return raw_batch(trained_run.model.schema, n=6)


@pytest.fixture(scope="module")
def expected(trained_run, batch):
  out = trained_run.model({k: tf.constant(v) for k, v in batch.items()})
  return {t: v.numpy() for t, v in out.items()}


def test_rest_request_formats():
  features = {"uid": ["a", "b"], "item_id": ["x", "y"]}
  assert rest_request(features) == {"signature_name": "serving_default", "inputs": features}
  assert rest_request(features, row_format=True)["instances"] == [
      {"uid": "a", "item_id": "x"}, {"uid": "b", "item_id": "y"}]
  with pytest.raises(ValueError, match="differ in length"):
    rest_request({"uid": ["a"], "item_id": []}, row_format=True)


def test_rest_response_parsing():
  rows = parse_rest_response({"predictions": [{"finish": 0.5, "like": 0.1},
                                              {"finish": 0.25, "like": 0.2}]})
  np.testing.assert_allclose(rows["like"], [0.1, 0.2])
  columns = parse_rest_response({"outputs": {"finish": [0.5], "like": [0.1]}})
  np.testing.assert_allclose(columns["finish"], [0.5])
  with pytest.raises(ServingError, match="Missing"):
    parse_rest_response({"error": "Missing input"})
  # One output (a one-task model): TF Serving leaves its name out.
  for body in ({"outputs": [0.5, 0.25]}, {"predictions": [0.5, 0.25]}):
    np.testing.assert_allclose(parse_rest_response(body, ["like"])["like"], [0.5, 0.25])
    with pytest.raises(ServingError, match=r"one unnamed output .*tasks are None"):
      parse_rest_response(body)


@pytest.mark.parametrize("row_format", [False, True])
def test_rest_client_round_trip(model, batch, expected, row_format):
  with rest_server(model) as address:
    got = RestClient(address, "stem", row_format=row_format).predict(batch)
  for task in ("finish", "like"):
    np.testing.assert_allclose(got[task], expected[task], atol=1e-6)


def test_rest_client_reports_a_missing_input(model, batch):
  partial = {k: v for k, v in batch.items() if k != "uid"}
  with rest_server(model) as address:
    with pytest.raises(ServingError, match=r"HTTP 400: .*missing \['uid'\]"):
      RestClient(address, "stem").predict(partial)
    with pytest.raises(ServingError, match="HTTP 404"):
      RestClient(address, "other").predict(batch)


def test_grpc_client_round_trip_and_missing_input(model, batch, expected):
  with grpc_server(model) as address:
    client = GrpcClient(address, "stem")
    got = client.predict(batch)
    for task in ("finish", "like"):
      np.testing.assert_allclose(got[task], expected[task], atol=1e-6)
    with pytest.raises(ServingError, match=r"INVALID_ARGUMENT: .*missing \['uid'\]"):
      client.predict({k: v for k, v in batch.items() if k != "uid"})
    client.close()


def write_csv(path, batch, extra_column=True):
  names = list(batch) + (["request_id"] if extra_column else [])
  with open(path, "w", newline="") as f:
    writer = csv.writer(f)
    writer.writerow(names)
    for i in range(len(batch["uid"])):
      writer.writerow([batch[n][i] for n in batch] + ([f"r{i}"] if extra_column else []))


def read_scores(path):
  with open(path) as f:
    return list(csv.DictReader(f))


def test_predict_command_scores_a_csv_with_the_saved_model(trained_run, batch, expected,
                                                           tmp_path):
  write_csv(tmp_path / "rows.csv", batch)
  result = run_here("predict", f"--saved_model={trained_run.export_path}", "--input=rows.csv",
                    "--output=scores.csv", "--keep_columns=request_id", "--eval_batch_size=4",
                    cwd=tmp_path)
  assert result.returncode == 0, result.stderr[-3000:]
  rows = read_scores(tmp_path / "scores.csv")
  assert list(rows[0]) == ["request_id", "finish", "like"] and len(rows) == 6
  np.testing.assert_allclose([float(r["like"]) for r in rows], expected["like"], atol=1e-6)

  missing = {k: v for k, v in batch.items() if k != "music_id"}
  write_csv(tmp_path / "bad.csv", missing)
  bad = run_here("predict", f"--saved_model={trained_run.export_path}", "--input=bad.csv",
                 "--output=bad_scores.csv", cwd=tmp_path)
  assert_clean_error(bad, r"bad.csv lacks column\(s\) \['music_id'\] that the model needs")
  assert not (tmp_path / "bad_scores.csv").exists()


@pytest.mark.slow
def test_predict_command_names_a_one_task_models_output_over_rest(trained_run, tmp_path):
  schema = dataclasses.replace(trained_run.model.schema, labels=["like"])
  one_task = build_model("stem", schema, tiny_model_config())
  path = export_saved_model(one_task, schema, str(tmp_path / "export"), "stem",
                            warmup_batches=[])
  batch = raw_batch(schema, n=5)
  expected = one_task({k: tf.constant(v) for k, v in batch.items()})["like"].numpy()
  write_csv(tmp_path / "rows.csv", batch, extra_column=False)
  with rest_server(Model(path, "stem")) as address:
    got = RestClient(address, "stem", row_format=True, tasks=["like"]).predict(batch)
    np.testing.assert_allclose(got["like"], expected, atol=1e-6)
    result = run_here("predict", f"--server={address}", "--protocol=rest",
                      f"--schema={path}/assets.extra/schema.json", "--input=rows.csv",
                      "--output=scores.csv", cwd=tmp_path)
  assert result.returncode == 0, result.stderr[-3000:]
  rows = read_scores(tmp_path / "scores.csv")
  assert list(rows[0]) == ["like"]
  np.testing.assert_allclose([float(r["like"]) for r in rows], expected, atol=1e-6)


def test_predict_command_through_a_grpc_server(trained_run, model, batch, expected, tmp_path):
  write_csv(tmp_path / "rows.csv", batch, extra_column=False)
  schema = f"{trained_run.export_path}/assets.extra/schema.json"
  with grpc_server(model) as address:
    result = run_here("predict", f"--server={address}", "--protocol=grpc", f"--schema={schema}",
                      "--input=rows.csv", "--output=scores.csv", cwd=tmp_path)
  assert result.returncode == 0, result.stderr[-3000:]
  rows = read_scores(tmp_path / "scores.csv")
  np.testing.assert_allclose([float(r["finish"]) for r in rows], expected["finish"], atol=1e-6)
  assert json.load(open(schema))["labels"] == ["finish", "like"]


def test_a_value_an_int64_input_cannot_hold_is_named_with_its_line(tmp_path):
  from stem_tfrs.config import ConfigError
  from stem_tfrs.serving.batch import score_csv
  specs = {"uid": (1, "int64"), "tags": (2, "int64")}
  scored = lambda features: {"like": np.zeros(len(features["uid"]), np.float32)}  # noqa: E731
  for body, line, column, value in (("1,2|3\n,4\n", 3, "uid", "''"),
                                    ("1,2|3\n2,\n3,5|x\n", 4, "tags", "'x'")):
    (tmp_path / "rows.csv").write_text("uid,tags\n" + body)
    with pytest.raises(ConfigError, match=rf"rows.csv line {line}: column '{column}' holds "
                                          rf"{value}, not an int64 id"):
      score_csv(str(tmp_path / "rows.csv"), str(tmp_path / "out.csv"), scored, specs,
                batch_size=2)
    assert not (tmp_path / "out.csv").exists()
  (tmp_path / "rows.csv").write_text("uid,tags\n1,2|3\n2,\n-3,5\n")
  assert score_csv(str(tmp_path / "rows.csv"), str(tmp_path / "out.csv"), scored, specs,
                   batch_size=2) == 3
