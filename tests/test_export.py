"""stem_tfrs.export: TF Serving layout, the serving_default contract, and a fresh-process load."""

import json
import os
import subprocess
import sys
import textwrap

import numpy as np
import pytest
import tensorflow as tf

from stem_tfrs.export import export_saved_model, versions

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
      "config.json", "schema.json", "tf_serving_warmup_requests"]
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


def test_versions_are_integers_never_reused(trained_run, tmp_path):
  model, schema = trained_run.model, trained_run.model.schema
  first = export_saved_model(model, schema, str(tmp_path), "m", version=7)
  second = export_saved_model(model, schema, str(tmp_path), "m", version=None)
  assert int(os.path.basename(second)) > 7
  assert versions(str(tmp_path / "m")) == [7, int(os.path.basename(second))]
  with pytest.raises(FileExistsError, match="version 7 already exists"):
    export_saved_model(model, schema, str(tmp_path), "m", version=7)
  assert sorted(os.listdir(tmp_path / "m")) == sorted(
      [os.path.basename(first), os.path.basename(second)])


def test_an_export_whose_version_is_taken_meanwhile_takes_the_next_one(trained_run, tmp_path,
                                                                      monkeypatch):
  # Another export finishes with the same (time-based) version while this one writes.
  from stem_tfrs.serving import warmup
  write_warmup = warmup.write_warmup

  def racing_write_warmup(path, batches, model_name):
    write_warmup(path, batches, model_name)
    (tmp_dir,) = [n for n in os.listdir(tmp_path / "m") if n.startswith(".tmp-")]
    taken = tmp_path / "m" / tmp_dir.split("-")[1]
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
