"""stem_tfrs.serving.warmup: hand-encoded PredictionLogs are the TF Serving API's own bytes."""

import os

import numpy as np
import pytest
import tensorflow as tf

from stem_tfrs.serving import warmup

# The `serving` extra (which the `test` extra installs): the messages to compare with.
model_pb2 = pytest.importorskip("tensorflow_serving.apis.model_pb2")
predict_pb2 = pytest.importorskip("tensorflow_serving.apis.predict_pb2")
prediction_log_pb2 = pytest.importorskip("tensorflow_serving.apis.prediction_log_pb2")

BATCHES = {
    "strings": {"uid": np.array([b"7", b"12", b"unseen"]), "item_id": np.array(["a", "\u00e9"])},
    "int64": {"age": np.array([3, -1, 2**62], dtype=np.int64)},
    "float": {"duration": np.array([0.5, np.nan, -2.25], dtype=np.float32),
              "score": np.array([1e300], dtype=np.float64)},
    "2-D padded": {"tags": np.array([[b"x", b"y", b""], [b"z", b"", b""]]),
                   "counts": np.array([[1, 2], [0, 0]], dtype=np.int64),
                   "uid": np.array([b"1", b"2"])},
    "many keys, out of order": {name: np.array([i], dtype=np.int64)
                                for i, name in enumerate(["z", "a", "m", "B", "_", "a1", "ab", "abc", "b\0", ""])},
}


def api_request(features, model_name):
  """What the TF Serving API's messages make of the same request."""
  request = predict_pb2.PredictRequest(
      model_spec=model_pb2.ModelSpec(name=model_name, signature_name="serving_default"))
  for name, values in features.items():
    request.inputs[name].CopyFrom(tf.make_tensor_proto(values))
  return request


@pytest.mark.parametrize("kind", list(BATCHES))
@pytest.mark.parametrize("model_name", ["stem", "a model", ""])
def test_the_bytes_are_what_the_serving_api_serializes(kind, model_name):
  features = BATCHES[kind]
  request = api_request(features, model_name)
  assert warmup.encode_predict_request(features, model_name) == request.SerializeToString(
      deterministic=True)
  log = prediction_log_pb2.PredictionLog(
      predict_log=prediction_log_pb2.PredictLog(request=request))
  encoded = warmup.encode_prediction_log(features, model_name)
  assert encoded == log.SerializeToString(deterministic=True)
  parsed = prediction_log_pb2.PredictionLog.FromString(encoded)
  assert parsed.predict_log.request.model_spec.name == model_name
  assert parsed.predict_log.request.model_spec.signature_name == "serving_default"


@pytest.mark.parametrize("kind", list(BATCHES))
def test_read_warmup_returns_what_was_written(kind, tmp_path):
  features = BATCHES[kind]
  path = str(tmp_path / warmup.WARMUP_FILE)
  assert warmup.write_warmup(path, [features, features], "stem") == 2
  requests = warmup.read_warmup(path)
  assert len(requests) == 2
  for request in requests:
    assert sorted(request) == sorted(features)
    for name, values in features.items():
      expected = tf.make_ndarray(tf.make_tensor_proto(values))  # str becomes bytes
      np.testing.assert_array_equal(request[name], expected)
      assert request[name].dtype == expected.dtype and request[name].shape == values.shape


def test_read_warmup_reads_a_file_the_serving_api_wrote(tmp_path):
  features = BATCHES["2-D padded"]
  path = str(tmp_path / warmup.WARMUP_FILE)
  log = prediction_log_pb2.PredictionLog(
      predict_log=prediction_log_pb2.PredictLog(request=api_request(features, "stem")))
  with tf.io.TFRecordWriter(path) as writer:
    writer.write(log.SerializeToString())  # not deterministic: any key order reads alike
  [request] = warmup.read_warmup(path)
  for name, values in features.items():
    np.testing.assert_array_equal(request[name], values)


def test_a_record_that_is_not_a_message_is_named(tmp_path):
  path = str(tmp_path / "bad")
  with tf.io.TFRecordWriter(path) as writer:
    writer.write(warmup.encode_prediction_log(BATCHES["int64"], "stem"))
    writer.write(b"\x32\xff")  # field 6, a length that runs past the end
  with pytest.raises(ValueError, match=r"bad: record 1: not a protobuf message"):
    warmup.read_warmup(path)


@pytest.mark.slow
def test_an_export_writes_warmup_requests_the_serving_api_parses(trained_run):
  path = os.path.join(trained_run.export_path, "assets.extra", warmup.WARMUP_FILE)
  ours = warmup.read_warmup(path)
  records = [r.numpy() for r in tf.data.TFRecordDataset(path)]
  assert ours and len(records) == len(ours)
  schema_inputs = {f.name for f in trained_run.model.schema.features}
  for record, request in zip(records, ours):
    log = prediction_log_pb2.PredictionLog.FromString(record)
    parsed = log.predict_log.request
    assert parsed.model_spec.signature_name == "serving_default"
    assert set(parsed.inputs) == set(request) and set(request) >= schema_inputs
    for name, proto in parsed.inputs.items():
      np.testing.assert_array_equal(tf.make_ndarray(proto), request[name])
