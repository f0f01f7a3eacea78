"""What TF Serving relies on, proved with TensorFlow's own tools (saved_model_cli, its C++
loader): signature, warmup, atomic export."""

import dataclasses
import os
import re
import signal
import subprocess
import sys
import time

import numpy as np
import pytest
import tensorflow as tf

from stem_tfrs.serving.export import export_saved_model
from stem_tfrs.serving.session import SavedModelSession
from stem_tfrs.serving.warmup import WARMUP_FILE, read_warmup

from tests.support import REPO
from tests.test_export import raw_batch
from tests.cli_cases import run_here
from tests.test_main import assert_clean_error


def saved_model_cli(*args):
  result = subprocess.run(["saved_model_cli", *args], capture_output=True, text=True,
                          timeout=300)
  assert result.returncode == 0, result.stderr[-3000:]
  return result.stdout


@pytest.mark.slow
def test_saved_model_cli_show_reports_the_serving_contract(trained_run):
  out = saved_model_cli("show", "--all", "--dir", trained_run.export_path)
  section = out.split("signature_def['serving_default']:")[1].split("signature_def[")[0]
  schema = trained_run.model.schema
  for name in schema.feature_names:
    assert re.search(rf"inputs\['{name}'\] tensor_info:\s+dtype: DT_STRING\s+shape: \(-1\)",
                     section), name
  for task in schema.tasks:
    assert re.search(rf"outputs\['{task}'\] tensor_info:\s+dtype: DT_FLOAT\s+shape: \(-1\)",
                     section), task
  assert "Method name is: tensorflow/serving/predict" in section
  assert "inputs['finish']" not in section  # no label inputs


@pytest.mark.slow
def test_saved_model_cli_run_returns_the_models_probabilities(trained_run):
  batch = raw_batch(trained_run.model.schema, n=4)
  exprs = ";".join(f"{k}={v!r}" for k, v in batch.items())
  out = saved_model_cli("run", "--dir", trained_run.export_path, "--tag_set", "serve",
                        "--signature_def", "serving_default", "--input_exprs", exprs)
  expected = trained_run.model({k: tf.constant(v) for k, v in batch.items()})
  for task in ("finish", "like"):
    printed = re.search(rf"Result for output key {task}:\s*\[([^\]]*)\]", out).group(1)
    np.testing.assert_allclose(np.array(printed.split(), dtype=float), expected[task].numpy(),
                               atol=1e-5)


def test_warmup_requests_replay_against_the_saved_model(trained_run):
  path = os.path.join(trained_run.export_path, "assets.extra", WARMUP_FILE)
  requests = read_warmup(path)
  assert [len(r["uid"]) for r in requests] == [1, 8, 64]
  serve = tf.saved_model.load(trained_run.export_path).signatures["serving_default"]
  for request in requests:
    assert set(request) == set(trained_run.model.schema.feature_names)
    outputs = serve(**{k: tf.constant(v) for k, v in request.items()})
    for task in ("finish", "like"):
      p = outputs[task].numpy()
      assert p.shape == (len(request["uid"]),) and ((p > 0) & (p < 1)).all()


@pytest.mark.slow
@pytest.mark.parametrize("splits", ["valid_only", "none"])
def test_a_warmup_file_without_test_rows(trained_run, tmp_path, splits):
  # From the first split with rows; with none, from missing values (the OOV rows).
  schema = trained_run.model.schema
  schema = dataclasses.replace(schema, splits={"test": [], "valid": schema.splits["valid"]}
                               if splits == "valid_only" else {})
  path = export_saved_model(trained_run.model, schema, str(tmp_path), "m")
  requests = read_warmup(os.path.join(path, "assets.extra", WARMUP_FILE))
  assert [len(r["uid"]) for r in requests] == [1, 8, 64]
  served = tf.saved_model.load(path).signatures["serving_default"]
  for request in requests:
    assert (set(request["uid"].tolist()) == {b""}) == (splits == "none")
    p = served(**{k: tf.constant(v) for k, v in request.items()})["like"].numpy()
    assert ((p > 0) & (p < 1)).all()


@pytest.fixture(scope="module")
def serve(trained_run):
  return tf.saved_model.load(trained_run.export_path).signatures["serving_default"]


@pytest.mark.slow
def test_unseen_ids_empty_batches_and_duplicate_rows_serve(trained_run, serve):
  names = trained_run.model.schema.feature_names
  unseen = serve(**{n: tf.constant(["never", "seen"]) for n in names})
  assert unseen["finish"].shape == [2]
  np.testing.assert_array_equal(unseen["finish"].numpy()[0], unseen["finish"].numpy()[1])
  empty = serve(**{n: tf.constant([], dtype=tf.string) for n in names})
  assert empty["finish"].shape == [0] and empty["like"].shape == [0]
  row = raw_batch(trained_run.model.schema, n=2)
  twice = serve(**{k: tf.constant([v[1], v[1], v[1]]) for k, v in row.items()})
  assert len(set(twice["like"].numpy().tolist())) == 1


def test_inputs_of_the_wrong_shape_are_errors_naming_the_input(trained_run, serve):
  names = trained_run.model.schema.feature_names
  good = {n: tf.constant(["a", "b"]) for n in names}
  other = names[1]
  for bad, shape in ((tf.constant([["a", "b"], ["c", "d"]]), r"\[2,2\]"),
                     (tf.constant("a"), r"\[\]")):
    with pytest.raises(tf.errors.InvalidArgumentError,
                       match=rf"Shape of tensor {other} {shape} is not compatible with expected "
                             r"shape \[\?\]"):
      serve(**dict(good, **{other: bad}))
  with pytest.raises(tf.errors.InvalidArgumentError,
                     match=rf"serving inputs must have the same number of rows; inputs and "
                           rf"rows:\] \[{names[0]} {other} .*\] \[2 3 2"):
    serve(**dict(good, **{other: tf.constant(["a", "b", "c"])}))


def test_wrong_dtype_is_a_signature_error(trained_run, serve):
  names = trained_run.model.schema.feature_names
  inputs = {n: tf.constant(["1"]) for n in names}
  inputs["uid"] = tf.constant([1], dtype=tf.int64)
  with pytest.raises((TypeError, ValueError, tf.errors.InvalidArgumentError)):
    serve(**inputs)


@pytest.mark.slow
def test_export_command_writes_the_version_asked_for(trained_run, tmp_path):
  result = run_here("export", f"--run_dir={trained_run.run_dir}", f"--export_dir={tmp_path}",
                    "--version=5", cwd=tmp_path)
  assert result.returncode == 0, result.stderr[-3000:]
  assert os.listdir(tmp_path / "stem") == ["5"]
  again = run_here("export", f"--run_dir={trained_run.run_dir}", f"--export_dir={tmp_path}",
                   "--version=5", cwd=tmp_path)
  assert_clean_error(again, "version 5 already exists")
  (tmp_path / "not_a_run").mkdir()
  missing = run_here("export", f"--run_dir={tmp_path / 'not_a_run'}", cwd=tmp_path)
  assert_clean_error(missing, "is not a run directory: it has no config.json")


@pytest.mark.slow
def test_an_export_killed_midway_leaves_no_numeric_version(trained_run, tmp_path):
  base = tmp_path / "stem"
  process = subprocess.Popen(
      [sys.executable, os.path.join(REPO, "main.py"), "export",
       f"--run_dir={trained_run.run_dir}", f"--export_dir={tmp_path}"],
      cwd=tmp_path, stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)
  deadline = time.time() + 120
  while time.time() < deadline and process.poll() is None:
    if base.exists() and any(n.startswith(".tmp-") for n in os.listdir(base)):
      process.send_signal(signal.SIGKILL)
      break
    time.sleep(0.005)
  process.wait(timeout=60)
  assert process.returncode == -signal.SIGKILL, "the export ended before it could be killed"
  names = os.listdir(base)
  assert any(n.startswith(".tmp-") for n in names)  # killed while writing
  for name in names:
    if name.isdigit():  # TF Serving would load it: it must be complete
      tf.saved_model.load(str(base / name))
  assert not [n for n in names if n.isdigit()]


# TF Serving's own path: the C++ SavedModel loader and one Session::Run per request.

def test_the_cpp_loader_serves_what_python_serves(trained_run):
  schema = trained_run.model.schema
  batch = raw_batch(schema)  # every fourth id unseen
  expected = trained_run.model({k: tf.constant(v) for k, v in batch.items()})
  with SavedModelSession(trained_run.export_path) as session:
    assert session.input_names == sorted(schema.feature_names)
    assert session.output_names == sorted(schema.tasks)
    request = session.request(batch)
    first, again = session.run(request), session.run(request)  # a request can be rerun
    for task in schema.tasks:
      assert first[task].dtype == np.float32 and first[task].shape == (16,)
      np.testing.assert_allclose(first[task], expected[task].numpy(), rtol=0, atol=1e-5)
      np.testing.assert_array_equal(again[task], first[task])
    empty = session.predict({name: [] for name in session.input_names})
    assert {task: p.shape for task, p in empty.items()} == {task: (0,) for task in schema.tasks}


def test_warmup_requests_replay_through_the_cpp_loader(trained_run):
  requests = read_warmup(os.path.join(trained_run.export_path, "assets.extra", WARMUP_FILE))
  with SavedModelSession(trained_run.export_path) as session:
    for request in requests:
      p = session.predict(request)["finish"]
      assert p.shape == (len(request["uid"]),) and ((p > 0) & (p < 1)).all()


@pytest.mark.slow
def test_a_bfloat16_export_loads_in_the_cpp_loader(trained_run, tmp_path):
  schema = trained_run.model.schema
  path = export_saved_model(trained_run.model, schema, str(tmp_path), "m", precision="bfloat16")
  batch = raw_batch(schema)
  expected = trained_run.model({k: tf.constant(v) for k, v in batch.items()})
  in_python = tf.saved_model.load(path).signatures["serving_default"](
      **{k: tf.constant(v) for k, v in batch.items()})
  with SavedModelSession(path) as session:
    served = session.predict(batch)
  for task in schema.tasks:
    assert served[task].dtype == np.float32
    np.testing.assert_allclose(served[task], in_python[task].numpy(), rtol=0, atol=1e-6)
    np.testing.assert_allclose(served[task], expected[task].numpy(), rtol=0, atol=0.01)


def test_the_cpp_session_refuses_bad_requests_and_exports_in_one_line(trained_run, tmp_path):
  names = trained_run.model.schema.feature_names
  good = {n: ["a", "b"] for n in names}
  with SavedModelSession(trained_run.export_path) as session:
    with pytest.raises(ValueError, match=r"inputs are \[.*\]; missing \['uid'\], not among "
                                         r"them \['label'\]"):
      session.request(dict({n: v for n, v in good.items() if n != "uid"}, label=[1, 0]))
    with pytest.raises(ValueError, match="input 'uid' takes strings, got int 1"):
      session.request(dict(good, uid=np.array([1, 2])))
    with pytest.raises(ValueError, match="input 'uid' takes strings, got NoneType None"):
      session.request(dict(good, uid=["a", None]))  # a JSON null
    request = session.request(good)
  with pytest.raises(RuntimeError, match="is closed"):
    session.run(request)
  with SavedModelSession(trained_run.export_path) as session:
    with pytest.raises(ValueError, match="made by another SavedModelSession"):
      session.run(request)
    with pytest.raises(tf.errors.InvalidArgumentError,
                       match="serving inputs must have the same number of rows"):
      session.predict(dict(good, uid=["a", "b", "c"]))
    # the model's own shape check; in TF Serving's session the input's tensor is renamed
    with pytest.raises(tf.errors.InvalidArgumentError,
                       match=r"Shape of tensor _arg_serving_default_uid_\w* \[2,2\] is not "
                             r"compatible with expected shape \[\?\]"):
      session.predict(dict(good, uid=[["a", "b"], ["c", "d"]]))
  with pytest.raises(tf.errors.NotFoundError, match=f"loading {tmp_path}: Could not find "
                                                    "SavedModel"):
    SavedModelSession(str(tmp_path))
  with pytest.raises(KeyError, match="has no signature 'predict'; it has .*serving_default"):
    SavedModelSession(trained_run.export_path, signature="predict")
