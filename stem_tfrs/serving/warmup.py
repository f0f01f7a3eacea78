"""TF Serving warmup: `assets.extra/tf_serving_warmup_requests`, a TFRecord of PredictionLogs.

TF Serving replays these requests when it loads a version, before it serves
traffic, so the first real requests do not pay for graph initialization.
"""

from __future__ import annotations

from typing import Dict, Iterable, List

import numpy as np
import tensorflow as tf
from tensorflow_serving.apis import model_pb2, predict_pb2, prediction_log_pb2

WARMUP_FILE = "tf_serving_warmup_requests"
SIGNATURE = "serving_default"


def predict_request(features: Dict[str, np.ndarray], model_name: str) -> predict_pb2.PredictRequest:
  """A PredictRequest for `serving_default` holding one tensor per raw feature column."""
  request = predict_pb2.PredictRequest(
      model_spec=model_pb2.ModelSpec(name=model_name, signature_name=SIGNATURE))
  for name, values in features.items():
    request.inputs[name].CopyFrom(tf.make_tensor_proto(values))
  return request


def write_warmup(path: str, batches: Iterable[Dict[str, np.ndarray]], model_name: str) -> int:
  """Writes one PredictionLog per batch of raw features; returns how many."""
  count = 0
  with tf.io.TFRecordWriter(path) as writer:
    for batch in batches:
      log = prediction_log_pb2.PredictionLog(
          predict_log=prediction_log_pb2.PredictLog(request=predict_request(batch, model_name)))
      writer.write(log.SerializeToString(deterministic=True))  # maps in key order
      count += 1
  return count


def read_warmup(path: str) -> List[Dict[str, tf.Tensor]]:
  """The warmup requests' inputs, as dicts of tensors ready for the signature."""
  requests = []
  for record in tf.data.TFRecordDataset(path):
    log = prediction_log_pb2.PredictionLog.FromString(record.numpy())
    requests.append({name: tf.make_ndarray(proto)
                     for name, proto in log.predict_log.request.inputs.items()})
  return requests
