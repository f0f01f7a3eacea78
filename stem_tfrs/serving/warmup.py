"""TF Serving warmup: `assets.extra/tf_serving_warmup_requests`, a TFRecord of PredictionLogs.

TF Serving replays these requests when it loads a version, before it serves
traffic, so the first real requests do not pay for graph initialization.

Every export writes this file, and exporting is core: it must not need the
`serving` extra (the TF Serving API package). So the few TF Serving messages
involved are encoded here in protobuf's wire format by hand, and only the
tensors are protobuf messages (TensorFlow's own TensorProto):

  PredictionLog  {6: predict_log PredictLog}
  PredictLog     {1: request PredictRequest}
  PredictRequest {1: model_spec ModelSpec, 2: inputs map<string, TensorProto>}
  ModelSpec      {1: name string, 3: signature_name string}

The bytes are those the TF Serving API's messages serialize deterministically
(the same map entry order); tests/test_warmup.py checks it against that package.
"""

from __future__ import annotations

from typing import Dict, Iterable, Iterator, List, Tuple

import numpy as np
import tensorflow as tf
from tensorflow.core.framework import tensor_pb2

WARMUP_FILE = "tf_serving_warmup_requests"
SIGNATURE = "serving_default"

_VARINT, _FIXED64, _LENGTH, _FIXED32 = 0, 1, 2, 5

# Field numbers, from tensorflow_serving/apis/{prediction_log,predict,model}.proto.
_LOG_PREDICT_LOG = 6  # PredictionLog.predict_log
_PREDICT_LOG_REQUEST = 1  # PredictLog.request
_REQUEST_MODEL_SPEC, _REQUEST_INPUTS = 1, 2  # PredictRequest
_SPEC_NAME, _SPEC_SIGNATURE_NAME = 1, 3  # ModelSpec
_ENTRY_KEY, _ENTRY_VALUE = 1, 2  # a map's entry


def _varint(value: int) -> bytes:
  out = bytearray()
  while True:
    low, value = value & 0x7F, value >> 7
    if not value:
      out.append(low)
      return bytes(out)
    out.append(low | 0x80)


def _field(number: int, payload: bytes) -> bytes:
  """A length-delimited field: a string, bytes or an embedded message."""
  return _varint(number << 3 | _LENGTH) + _varint(len(payload)) + payload


def _string_field(number: int, text: str) -> bytes:
  return _field(number, text.encode("utf-8")) if text else b""  # proto3 leaves "" out


def _map_key_order(name: str) -> Tuple[int, ...]:
  """Sorts map keys as protobuf's (upb) deterministic serialization writes them.

  Bytewise, except that a key comes before its own prefixes ("ab" before "a"):
  as if each key ended in a byte above all others. Any order parses alike; the
  same order gives the same bytes.
  """
  return (*name.encode("utf-8"), 256)


def encode_predict_request(features: Dict[str, np.ndarray], model_name: str) -> bytes:
  """A serialized PredictRequest for `serving_default`, one tensor per raw feature column.

  Args:
    features: Raw feature name -> values (any shape `tf.make_tensor_proto` takes).
    model_name: The model's name on the server (ModelSpec.name).

  Returns:
    The bytes of a `tensorflow.serving.PredictRequest`, as protobuf serializes it
    deterministically.
  """
  model_spec = (_string_field(_SPEC_NAME, model_name)
                + _string_field(_SPEC_SIGNATURE_NAME, SIGNATURE))
  request = _field(_REQUEST_MODEL_SPEC, model_spec)
  for name in sorted(features, key=_map_key_order):
    tensor = tf.make_tensor_proto(features[name]).SerializeToString(deterministic=True)
    request += _field(_REQUEST_INPUTS, _field(_ENTRY_KEY, name.encode("utf-8"))
                      + _field(_ENTRY_VALUE, tensor))
  return request


def encode_prediction_log(features: Dict[str, np.ndarray], model_name: str) -> bytes:
  """A serialized PredictionLog holding `encode_predict_request(features, model_name)`."""
  return _field(_LOG_PREDICT_LOG,
                _field(_PREDICT_LOG_REQUEST, encode_predict_request(features, model_name)))


def _fields(message: bytes, where: str) -> Iterator[Tuple[int, int, bytes]]:
  """(number, wire type, payload) of each field of a serialized message.

  Raises:
    ValueError: The bytes are not a protobuf message (`where` names them).
  """

  def varint(position: int) -> Tuple[int, int]:
    value = shift = 0
    while True:
      if position >= len(message) or shift > 63:
        raise ValueError(f"{where}: not a protobuf message (a varint runs past its end)")
      byte = message[position]
      value |= (byte & 0x7F) << shift
      position, shift = position + 1, shift + 7
      if not byte & 0x80:
        return value, position

  position = 0
  while position < len(message):
    key, position = varint(position)
    number, wire_type = key >> 3, key & 7
    if wire_type == _VARINT:
      start = position
      _, position = varint(position)
    elif wire_type in (_FIXED64, _FIXED32):
      start = position
      position += 8 if wire_type == _FIXED64 else 4
    elif wire_type == _LENGTH:
      size, start = varint(position)
      position = start + size
    else:
      raise ValueError(f"{where}: not a protobuf message (wire type {wire_type})")
    if position > len(message):
      raise ValueError(f"{where}: not a protobuf message (a field runs past its end)")
    yield number, wire_type, message[start:position]


def _message_field(message: bytes, number: int, where: str) -> bytes:
  """The payload of the last occurrence of embedded-message field `number` (b"" if absent)."""
  found = b""
  for field, wire_type, payload in _fields(message, where):
    if field == number and wire_type == _LENGTH:
      found = payload
  return found


def decode_request_inputs(log: bytes, where: str = "a PredictionLog") -> Dict[str, np.ndarray]:
  """The inputs of a serialized PredictionLog's predict request, as arrays.

  Args:
    log: A serialized `tensorflow.serving.PredictionLog`.
    where: What the bytes are, for the error message.

  Returns:
    Feature name -> an array, as the request's tensor carries it.

  Raises:
    ValueError: The bytes are not a protobuf message.
  """
  request = _message_field(_message_field(log, _LOG_PREDICT_LOG, where),
                           _PREDICT_LOG_REQUEST, where)
  inputs = {}
  for field, wire_type, entry in _fields(request, where):
    if field != _REQUEST_INPUTS or wire_type != _LENGTH:
      continue
    name, tensor = "", b""
    for entry_field, entry_type, payload in _fields(entry, where):
      if entry_type != _LENGTH:
        continue
      if entry_field == _ENTRY_KEY:
        name = payload.decode("utf-8")
      elif entry_field == _ENTRY_VALUE:
        tensor = payload
    inputs[name] = tf.make_ndarray(tensor_pb2.TensorProto.FromString(tensor))
  return inputs


def write_warmup(path: str, batches: Iterable[Dict[str, np.ndarray]], model_name: str) -> int:
  """Writes one PredictionLog per batch of raw features; returns how many."""
  count = 0
  with tf.io.TFRecordWriter(path) as writer:
    for batch in batches:
      writer.write(encode_prediction_log(batch, model_name))
      count += 1
  return count


def read_warmup(path: str) -> List[Dict[str, np.ndarray]]:
  """The warmup requests' inputs, as dicts of arrays ready for the signature.

  Raises:
    ValueError: A record is not a PredictionLog (the message names the file and record).
  """
  return [decode_request_inputs(record.numpy(), f"{path}: record {i}")
          for i, record in enumerate(tf.data.TFRecordDataset(path))]
