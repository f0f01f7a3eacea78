"""Preparing data loads none of the training stack; stem_tfrs' public API still resolves.

Checked in a fresh interpreter: the test process has long imported everything.
"""

import json
import os
import subprocess
import sys

import pytest

from tests.support import REPO

DATA_PREP_MODULES = ["data_prep.tiktok", "data_prep.kuairand", "data_prep.qkvideo",
                     "data_prep.movielens", "data_prep.logs", "data_prep.synthetic",
                     "data_prep.writer", "data_prep.readers", "data_prep.cli"]
TRAINING_STACK = ["tensorflow_recommenders", "keras_tuner", "stem_tfrs.training",
                  "stem_tfrs.serving.export", "stem_tfrs.models", "stem_tfrs.layers"]

# Imports each data_prep module in turn, noting which training-stack modules each one
# brought in; then reads stem_tfrs' public names the ways users do.
_PROBE = """
import json, os, sys
stack, modules = json.loads(sys.argv[1]), json.loads(sys.argv[2])
report = {"loaded_by": {}}
for name in modules:
  before = set(sys.modules)
  __import__(name)
  report["loaded_by"][name] = [m for m in stack if m in set(sys.modules) - before]
import tensorflow as tf
report["legacy_keras_env"] = os.environ.get("TF_USE_LEGACY_KERAS")
report["keras"] = tf.keras.__name__
import stem_tfrs
report["all"] = list(stem_tfrs.__all__)
report["missing_from_dir"] = sorted(set(stem_tfrs.__all__) - set(dir(stem_tfrs)))
report["train_is_training_train"] = stem_tfrs.train is sys.modules["stem_tfrs.training.trainer"].train
from stem_tfrs import LazyAdam, build_model, export_saved_model
report["from_import"] = [LazyAdam.__name__, build_model.__name__, export_saved_model.__name__]
namespace = {}
exec("from stem_tfrs import *", namespace)
report["star_import_missing"] = sorted(set(stem_tfrs.__all__) - set(namespace))
report["submodule_attribute"] = stem_tfrs.data.schema.__name__
try:
  stem_tfrs.no_such_name
  report["unknown_name"] = "resolved"
except AttributeError as e:
  report["unknown_name"] = str(e)
print(json.dumps(report))
"""


@pytest.fixture(scope="module")
def probe():
  env = {k: v for k, v in os.environ.items() if k != "TF_USE_LEGACY_KERAS"}
  env["TF_CPP_MIN_LOG_LEVEL"] = "3"
  result = subprocess.run(
      [sys.executable, "-c", _PROBE, json.dumps(TRAINING_STACK), json.dumps(DATA_PREP_MODULES)],
      cwd=REPO, env=env, capture_output=True, text=True, timeout=300)
  assert result.returncode == 0, result.stderr[-3000:]
  return json.loads(result.stdout.strip().splitlines()[-1])


def test_no_data_prep_module_loads_the_training_stack(probe):
  assert probe["loaded_by"] == {name: [] for name in DATA_PREP_MODULES}


def test_data_prep_still_selects_keras_2_before_tensorflow_loads(probe):
  # The subprocess starts without TF_USE_LEGACY_KERAS; importing data_prep sets it.
  assert probe["legacy_keras_env"] == "1"
  assert probe["keras"].startswith("tf_keras.")  # Keras 2; Keras 3 is "keras..."


def test_stem_tfrs_public_names_resolve_on_first_use(probe):
  assert "train" in probe["all"] and "Schema" in probe["all"] and "__version__" in probe["all"]
  assert probe["missing_from_dir"] == []
  assert probe["train_is_training_train"] is True
  assert probe["from_import"] == ["LazyAdam", "build_model", "export_saved_model"]
  assert probe["star_import_missing"] == []
  assert probe["submodule_attribute"] == "stem_tfrs.data.schema"
  assert probe["unknown_name"] == "module 'stem_tfrs' has no attribute 'no_such_name'"
