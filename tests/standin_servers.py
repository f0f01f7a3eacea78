"""Local stand-ins for TF Serving's REST and gRPC front ends, on 127.0.0.1 only.

They parse requests and format responses the way TF Serving does, and compute
the answers with the real SavedModel in TensorFlow's C++ session, as TF Serving
does. Tests only: they are not TF Serving.
"""

import contextlib
import json
import re
import threading
from concurrent import futures
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer

import grpc
import numpy as np
import tensorflow as tf
from tensorflow_serving.apis import predict_pb2, prediction_service_pb2_grpc

from stem_tfrs.serving.session import SavedModelSession


class Model:
  """The SavedModel's serving_default in TensorFlow's C++ session, as TF Serving runs it.

  Loaded by the C++ SavedModel loader (`SavedModelSession`); request values
  are converted to the signature's dtypes, as TF Serving converts JSON.
  """

  def __init__(self, path, name):
    self.name = name
    self.session = SavedModelSession(path)
    self.dtypes = {n: tf.as_dtype(d).as_numpy_dtype for n, d in self.session.input_dtypes.items()}

  def __call__(self, columns):
    missing = sorted(set(self.dtypes) - set(columns))
    extra = sorted(set(columns) - set(self.dtypes))
    if missing or extra:
      raise ValueError(f"input keys do not match the signature: missing {missing}, "
                       f"unexpected {extra}")
    try:
      return self.session.predict({k: np.asarray(v, dtype=self.dtypes[k])
                                   for k, v in columns.items()})
    except tf.errors.OpError as e:  # the model refused the request: TF Serving's 400
      raise ValueError(e.message) from e


@contextlib.contextmanager
def rest_server(model):
  class Handler(BaseHTTPRequestHandler):
    def log_message(self, *args):
      pass

    def reply(self, code, body):
      data = json.dumps(body).encode()
      self.send_response(code)
      self.send_header("Content-Type", "application/json")
      self.send_header("Content-Length", str(len(data)))
      self.end_headers()
      self.wfile.write(data)

    def do_POST(self):
      if not re.fullmatch(rf"/v1/models/{model.name}(/versions/\d+)?:predict", self.path):
        return self.reply(404, {"error": f"Servable not found for request: {self.path}"})
      body = json.loads(self.rfile.read(int(self.headers["Content-Length"])))
      try:
        if "instances" in body:
          rows = body["instances"]
          columns = {k: [r[k] for r in rows] for k in (rows[0] if rows else {})}
          outputs = model(columns)
          if len(outputs) == 1:  # TF Serving leaves a single output unnamed
            (values,) = outputs.values()
            return self.reply(200, {"predictions": values.tolist()})
          return self.reply(200, {"predictions": [
              {t: float(v[i]) for t, v in outputs.items()} for i in range(len(rows))]})
        outputs = model(body["inputs"])
        if len(outputs) == 1:
          (values,) = outputs.values()
          return self.reply(200, {"outputs": values.tolist()})
        return self.reply(200, {"outputs": {t: v.tolist() for t, v in outputs.items()}})
      except ValueError as e:
        return self.reply(400, {"error": str(e)})

  server = ThreadingHTTPServer(("127.0.0.1", 0), Handler)
  thread = threading.Thread(target=server.serve_forever, daemon=True)
  thread.start()
  try:
    yield f"127.0.0.1:{server.server_address[1]}"
  finally:
    server.shutdown()
    server.server_close()
    thread.join(timeout=10)


class _PredictionService(prediction_service_pb2_grpc.PredictionServiceServicer):
  def __init__(self, model):
    self.model = model

  def Predict(self, request, context):
    if request.model_spec.name != self.model.name:
      context.abort(grpc.StatusCode.NOT_FOUND,
                    f"Servable not found for request: {request.model_spec.name}")
    columns = {k: tf.make_ndarray(v) for k, v in request.inputs.items()}
    try:
      outputs = self.model(columns)
    except ValueError as e:
      context.abort(grpc.StatusCode.INVALID_ARGUMENT, str(e))
    response = predict_pb2.PredictResponse()
    for task, values in outputs.items():
      response.outputs[task].CopyFrom(tf.make_tensor_proto(np.asarray(values, np.float32)))
    return response


@contextlib.contextmanager
def grpc_server(model):
  server = grpc.server(futures.ThreadPoolExecutor(max_workers=2))
  prediction_service_pb2_grpc.add_PredictionServiceServicer_to_server(
      _PredictionService(model), server)
  port = server.add_insecure_port("127.0.0.1:0")
  server.start()
  try:
    yield f"127.0.0.1:{port}"
  finally:
    server.stop(grace=None).wait(10)
