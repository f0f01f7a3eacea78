"""stem_tfrs.serving.export: TF Serving layout, the serving_default contract, and a fresh-process load."""

import json
import os
import shutil
import subprocess
import sys
import textwrap

import numpy as np
import pytest
import tensorflow as tf

from stem_tfrs.serving.export import export_saved_model, versions, with_precision
from stem_tfrs.models import MODEL_NAMES

from tests.cli_cases import run_here

LOAD_WITH_TENSORFLOW_ONLY = textwrap.dedent("""
    import json, sys
    import tensorflow as tf
    model = tf.saved_model.load(sys.argv[1])
    serve = model.signatures["serving_default"]
    inputs = json.loads(sys.argv[2])
    outputs = serve(**{k: tf.constant(v) for k, v in inputs.items()})
    loaded = sorted(m for m in sys.modules if m.split(".")[0] in ("stem_tfrs", "tf_keras",
                                                                   "tensorflow_recommenders"))
    print(json.dumps({"outputs": {k: v.numpy().tolist() for k, v in outputs.items()},
                      "extra_modules": loaded}))
""")


def raw_batch(schema, n=16):
  """Raw ids as a serving request carries them; every fourth row is unseen."""
  features = {}
  for f in schema.features:
    vocab = open(schema.path(f.vocabulary_file)).read().split()
    features[f.name] = [vocab[(i * 7) % len(vocab)] if i % 4 else f"unseen-{f.name}-{i}"
                        for i in range(n)]
  return features


def test_export_layout(trained_run):
  path = trained_run.export_path
  base, version = os.path.split(path)
  assert os.path.basename(base) == "stem" and version.isdigit()
  assert os.listdir(base) == [version]  # no temporary directory left behind
  assert os.path.isfile(os.path.join(path, "saved_model.pb"))
  assert sorted(os.listdir(os.path.join(path, "assets.extra"))) == [
      "config.json", "export.json", "schema.json", "tf_serving_warmup_requests"]
  assert json.load(open(os.path.join(path, "assets.extra", "export.json"))) == {
      "dtype_policy": "float32"}
  assert json.load(open(os.path.join(path, "assets.extra", "schema.json")))["labels"] == [
      "finish", "like"]
  assert "uid.txt" in os.listdir(os.path.join(path, "assets"))


def test_signature_takes_raw_columns_and_returns_task_probabilities(trained_run):
  signature = tf.saved_model.load(trained_run.export_path).signatures["serving_default"]
  schema = trained_run.model.schema
  _, inputs = signature.structured_input_signature
  assert sorted(inputs) == sorted(schema.feature_names)
  for name, spec in inputs.items():
    assert spec.dtype == tf.string and spec.shape.as_list() == [None] and spec.name == name
  outputs = signature.structured_outputs
  assert sorted(outputs) == ["finish", "like"]
  for spec in outputs.values():
    assert spec.dtype == tf.float32 and spec.shape.as_list() == [None]


def test_the_serving_graph_has_no_control_flow(trained_run):
  # A cond (e.g. tf.debugging.Assert's guard) puts the whole graph on TensorFlow's slower
  # control-flow executor; the input checks are bare ops.
  signature = tf.saved_model.load(trained_run.export_path).signatures["serving_default"]
  ops = {node.op for function in signature.graph.as_graph_def().library.function
         for node in function.node_def}
  assert "Assert" in ops and "EnsureShape" in ops
  assert not ops & {"If", "StatelessIf", "While", "StatelessWhile", "Switch", "Merge"}


@pytest.mark.slow
def test_fresh_tensorflow_only_process_serves_same_probabilities(trained_run, tmp_path):
  schema = trained_run.model.schema
  batch = raw_batch(schema)
  env = {k: v for k, v in os.environ.items() if k != "TF_USE_LEGACY_KERAS"}
  env["PYTHONPATH"] = ""
  result = subprocess.run(
      [sys.executable, "-c", LOAD_WITH_TENSORFLOW_ONLY, trained_run.export_path,
       json.dumps(batch)], capture_output=True, text=True, cwd=tmp_path, env=env, timeout=300)
  assert result.returncode == 0, result.stderr[-3000:]
  served = json.loads(result.stdout.strip().splitlines()[-1])
  assert served["extra_modules"] == []
  expected = trained_run.model({k: tf.constant(v) for k, v in batch.items()})
  for task in ("finish", "like"):
    got = np.array(served["outputs"][task])
    assert got.shape == (16,) and ((got >= 0) & (got <= 1)).all()
    np.testing.assert_allclose(got, expected[task].numpy(), rtol=0, atol=1e-5)


@pytest.mark.slow
def test_versions_are_integers_never_reused(trained_run, tmp_path):
  model, schema = trained_run.model, trained_run.model.schema
  first = export_saved_model(model, schema, str(tmp_path), "m", version=7, warmup_batches=[])
  second = export_saved_model(model, schema, str(tmp_path), "m", version=None,
                              warmup_batches=[])
  assert int(os.path.basename(second)) > 7
  assert versions(str(tmp_path / "m")) == [7, int(os.path.basename(second))]
  with pytest.raises(FileExistsError, match="version 7 already exists"):
    export_saved_model(model, schema, str(tmp_path), "m", version=7, warmup_batches=[])
  assert sorted(os.listdir(tmp_path / "m")) == sorted(
      [os.path.basename(first), os.path.basename(second)])


@pytest.mark.slow
def test_an_export_whose_version_is_taken_meanwhile_takes_the_next_one(trained_run, tmp_path,
                                                                      monkeypatch):
  # Another export finishes with the same (time-based) version while this one writes.
  from stem_tfrs.serving import warmup
  write_warmup = warmup.write_warmup

  def racing_write_warmup(path, batches, model_name):
    write_warmup(path, batches, model_name)
    (tmp_dir,) = [n for n in os.listdir(tmp_path / "m") if n.startswith(".tmp-")]
    taken = tmp_path / "m" / tmp_dir.rsplit("-", 1)[1]  # .tmp-<host>-<pid>-<version>
    taken.mkdir()
    (taken / "saved_model.pb").write_bytes(b"the other export")

  monkeypatch.setattr(warmup, "write_warmup", racing_write_warmup)
  model, schema = trained_run.model, trained_run.model.schema
  path = export_saved_model(model, schema, str(tmp_path), "m")
  (other,) = [v for v in versions(str(tmp_path / "m")) if str(v) != os.path.basename(path)]
  assert int(os.path.basename(path)) > other
  assert (tmp_path / "m" / str(other) / "saved_model.pb").read_bytes() == b"the other export"
  assert os.path.isfile(os.path.join(path, "assets.extra", "tf_serving_warmup_requests"))
  assert sorted(os.listdir(tmp_path / "m")) == sorted([str(other), os.path.basename(path)])


@pytest.mark.slow
def test_the_saved_model_holds_no_optimizer_state_and_the_model_keeps_its_optimizer(
    trained_run, tmp_path):
  # A trained model is compiled: its optimizer's slots are two more copies of every weight.
  model = trained_run.model
  optimizer = model.optimizer
  assert optimizer is not None and optimizer.variables
  stored = tf.train.list_variables(os.path.join(trained_run.export_path, "variables",
                                                "variables"))
  assert not [name for name, _ in stored if "optimizer" in name.lower()]
  table = model.embedding.table.shape.as_list()
  assert [shape for _, shape in stored].count(table) == 1
  # The export leaves the model its optimizer: a checkpoint still holds the slots.
  export_saved_model(model, model.schema, str(tmp_path / "export"), "m", warmup_batches=[])
  assert model.optimizer is optimizer
  prefix = tf.train.Checkpoint(model=model).write(str(tmp_path / "checkpoint" / "ckpt"))
  slots = [shape for name, shape in tf.train.list_variables(prefix) if "optimizer" in name]
  assert slots.count(table) == 2


def stored_weights(path):
  """{checkpoint key: (dtype, shape)} of the model weights a SavedModel stores.

  (Keys are object-graph paths, `model/variables/<i>/...`; the metrics'
  counters, stored beside them, are left out.)
  """
  reader = tf.train.load_checkpoint(os.path.join(path, "variables", "variables"))
  shapes = reader.get_variable_to_shape_map()
  return {key: (dtype, shapes[key]) for key, dtype in reader.get_variable_to_dtype_map().items()
          if key.startswith("model/variables/")}


@pytest.mark.slow
def test_export_command_writes_bfloat16_weights_that_serve_float32_probabilities(
    trained_run, tmp_path):
  # The command line as main.py runs it, in this process (TensorFlow is imported already).
  result = run_here("export", f"--run_dir={trained_run.run_dir}", f"--export_dir={tmp_path}",
                    "--export_precision=bfloat16", "--version=3", cwd=tmp_path)
  assert result.returncode == 0, result.stderr[-3000:]
  path = str(tmp_path / "stem" / "3")
  assert result.stdout.strip().splitlines()[-1] == f"SavedModel: {path}"
  assert json.load(open(os.path.join(path, "assets.extra", "export.json"))) == {
      "dtype_policy": "bfloat16"}
  weights, float32_weights = stored_weights(path), stored_weights(trained_run.export_path)
  assert len(weights) == len(trained_run.model.weights)
  assert {dtype for dtype, _ in weights.values()} == {tf.bfloat16}
  # The float32 export stores the same weights (the fused table among them) in float32.
  assert {dtype for dtype, _ in float32_weights.values()} == {tf.float32}
  assert sorted(shape for _, shape in weights.values()) == sorted(
      shape for _, shape in float32_weights.values())
  assert trained_run.model.embedding.table.shape.as_list() in [
      shape for _, shape in weights.values()]

  signature = tf.saved_model.load(path).signatures["serving_default"]
  for spec in signature.structured_outputs.values():
    assert spec.dtype == tf.float32 and spec.shape.as_list() == [None]
  batch = {k: tf.constant(v) for k, v in raw_batch(trained_run.model.schema, n=64).items()}
  served = signature(**batch)
  expected = trained_run.model(batch)
  assert trained_run.model.dtype_policy.name == "float32"  # the model itself is left alone
  for task in ("finish", "like"):
    got, want = served[task].numpy(), expected[task].numpy()
    assert got.dtype == np.float32 and ((got >= 0) & (got <= 1)).all()
    # bfloat16 keeps 8 bits of mantissa: the probabilities move, by little.
    assert np.abs(got - want).max() > 0
    np.testing.assert_allclose(got, want, rtol=0, atol=0.01)


@pytest.mark.slow
def test_exporting_keeps_the_model_s_own_precision_unless_told(trained_run, tmp_path):
  model, schema = trained_run.model, trained_run.model.schema
  same = export_saved_model(model, schema, str(tmp_path), "m", warmup_batches=[],
                            precision="float32")
  assert {dtype for dtype, _ in stored_weights(same).values()} == {tf.float32}
  with pytest.raises(ValueError, match="precision must be one of float32, bfloat16, got 'fp8'"):
    export_saved_model(model, schema, str(tmp_path), "m", precision="fp8")
  assert versions(str(tmp_path / "m")) == [int(os.path.basename(same))]


@pytest.mark.slow
def test_export_run_takes_the_run_s_own_export_precision(trained_run, tmp_path):
  from stem_tfrs.serving.export import export_run
  run_dir = tmp_path / "run"
  shutil.copytree(os.path.join(trained_run.run_dir, "checkpoints"), run_dir / "checkpoints")
  with open(os.path.join(trained_run.run_dir, "config.json")) as f:
    config = json.load(f)
  assert config["train_config"]["export_precision"] == "float32"
  config["train_config"]["export_precision"] = "bfloat16"
  (run_dir / "config.json").write_text(json.dumps(config))
  path = export_run(str(run_dir), str(tmp_path / "export"))
  assert json.load(open(os.path.join(path, "assets.extra", "export.json"))) == {
      "dtype_policy": "bfloat16"}
  path = export_run(str(run_dir), str(tmp_path / "export"), precision="float32")
  assert {dtype for dtype, _ in stored_weights(path).values()} == {tf.float32}


@pytest.mark.parametrize("name,batch_norm", [(name, False) for name in MODEL_NAMES]
                         + [("stem", True)])
def test_every_architecture_has_a_bfloat16_copy_that_predicts_alike(tiny_data, name,
                                                                    batch_norm):
  from tests.support import tiny_model_config
  from stem_tfrs import build_model
  from stem_tfrs.data.schema import Schema
  schema = Schema.load(tiny_data)
  tf.keras.utils.set_random_seed(0)
  model = build_model(name, schema, tiny_model_config(batch_norm=batch_norm))
  copy = with_precision(model, "bfloat16")
  assert tf.keras.mixed_precision.global_policy().name == "float32"  # restored
  assert copy.dtype_policy.name == "bfloat16" and model.dtype_policy.name == "float32"
  for source, target in zip(model.weights, copy.weights):
    # BatchNormalization keeps float32 parameters under the bfloat16 policy.
    expected = tf.float32 if "batch_norm" in source.name else tf.bfloat16
    assert target.dtype == expected, target.name
    np.testing.assert_array_equal(tf.cast(target, tf.float32),
                                  tf.cast(tf.cast(source, target.dtype), tf.float32))
  batch = {k: tf.constant(v) for k, v in raw_batch(schema, n=32).items()}
  want, got = model(batch), copy(batch)
  for task in schema.tasks:
    assert got[task].dtype == tf.float32
    np.testing.assert_allclose(got[task].numpy(), want[task].numpy(), rtol=0, atol=0.02)


MAX_VERSION = 2**63 - 1  # TF Serving parses versions as int64


@pytest.mark.parametrize("version", [0, -1, MAX_VERSION + 1, 99999999999999999999])
def test_versions_outside_1_to_2_63_minus_1_are_refused(trained_run, tmp_path, version):
  model, schema = trained_run.model, trained_run.model.schema
  with pytest.raises(ValueError, match=rf"version {version}: .*1 to {MAX_VERSION}"):
    export_saved_model(model, schema, str(tmp_path), "m", version=version)
  assert not (tmp_path / "m").exists() or not os.listdir(tmp_path / "m")


def test_the_default_version_ignores_versions_beyond_int64(tmp_path):
  from stem_tfrs.serving.export import _next_version
  (tmp_path / "m" / "99999999999999999999").mkdir(parents=True)
  (tmp_path / "m" / "5").mkdir()
  version = _next_version(str(tmp_path / "m"))
  assert 5 < version <= MAX_VERSION
  (tmp_path / "m" / str(MAX_VERSION)).mkdir()  # no version left above it
  with pytest.raises(ValueError, match=rf"{tmp_path / 'm'}: version {MAX_VERSION} exists"):
    _next_version(str(tmp_path / "m"))


def test_export_command_refuses_a_version_beyond_int64_in_one_line(trained_run, tmp_path):
  from tests.cli_cases import run_here
  from tests.test_main import assert_clean_error
  result = run_here("export", f"--run_dir={trained_run.run_dir}", f"--export_dir={tmp_path}",
                    "--version=99999999999999999999", cwd=tmp_path)
  assert_clean_error(result, r"--version=99999999999999999999: .*1 to 9223372036854775807")
  assert not (tmp_path / "stem").exists()


def dead_pid():
  process = subprocess.Popen([sys.executable, "-c", "pass"])
  process.wait()
  return process.pid


@pytest.mark.slow
def test_an_export_removes_temporaries_of_dead_exports_and_keeps_live_ones(trained_run,
                                                                         tmp_path):
  import socket
  host = socket.gethostname()
  base = tmp_path / "m"
  base.mkdir()
  live = subprocess.Popen([sys.executable, "-c", "import time; time.sleep(60)"])
  try:
    dead = base / f".tmp-{host}-{dead_pid()}-1700000000"
    alive = base / f".tmp-{host}-{live.pid}-1700000001"
    for path in (dead, alive):
      (path / "variables").mkdir(parents=True)
      (path / "saved_model.pb").write_bytes(b"half written")
    path = export_saved_model(trained_run.model, trained_run.model.schema, str(tmp_path), "m",
                              warmup_batches=[])
    assert sorted(os.listdir(base)) == sorted([alive.name, os.path.basename(path)])
  finally:
    live.kill()
    live.wait()
