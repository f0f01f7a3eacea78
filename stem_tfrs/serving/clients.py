"""Clients of a model served by TF Serving: REST (port 8501) and gRPC PredictionService (8500).

    client = RestClient("localhost:8501", "stem")          # or GrpcClient("localhost:8500", "stem")
    client.predict({"uid": ["1", "2"], "item_id": ["10", "11"], ...})
    # -> {"finish": array([0.31, 0.52]), "like": array([0.04, 0.09])}

Both send raw feature columns to the `serving_default` signature and return one
probability array per task. A request the server refuses raises `ServingError`
with the server's own message (e.g. a missing input); one that gets no answer
(nothing listens at the address, or a server of the other protocol does)
raises `ServingConnectionError`, which says which. The REST client needs
nothing beyond the core; the gRPC one needs the `serving` extra.
"""

from __future__ import annotations

import http.client
import json
import socket
import urllib.error
import urllib.request
from typing import Dict, Optional, Sequence

import numpy as np

from stem_tfrs.errors import ServingConnectionError, ServingError  # noqa: F401  (raised here; defined with the others)
from stem_tfrs.extras import need

SIGNATURE = "serving_default"
Features = Dict[str, Sequence]


def rest_request(features: Features, row_format: bool = False) -> dict:
  """The JSON body of a REST predict request: columnar `inputs`, or row `instances`."""
  columns = {name: np.asarray(values).tolist() for name, values in features.items()}
  if not row_format:
    return {"signature_name": SIGNATURE, "inputs": columns}
  sizes = {len(v) for v in columns.values()}
  if len(sizes) > 1:
    raise ValueError(f"feature columns differ in length: {sorted(sizes)}")
  rows = sizes.pop() if sizes else 0
  return {"signature_name": SIGNATURE,
          "instances": [{name: values[i] for name, values in columns.items()}
                        for i in range(rows)]}


def parse_rest_response(body: dict, tasks: Optional[Sequence[str]] = None
                        ) -> Dict[str, np.ndarray]:
  """{task: probabilities} from a REST predict response, in either format.

  TF Serving leaves the output's name out when the signature has only one
  (a one-task model): `tasks`, the model's task names, then names it.
  """
  if "error" in body:
    raise ServingError(body["error"])
  if "outputs" in body:
    outputs = body["outputs"]
    if not isinstance(outputs, dict):
      outputs = {_only_task(tasks, outputs): outputs}
    return {task: np.asarray(v, dtype=np.float32) for task, v in outputs.items()}
  if "predictions" in body:
    rows = body["predictions"]
    if rows and not isinstance(rows[0], dict):
      return {_only_task(tasks, rows): np.asarray(rows, dtype=np.float32)}
    names = list(rows[0]) if rows else list(tasks or [])
    return {task: np.asarray([r[task] for r in rows], dtype=np.float32) for task in names}
  raise ServingError(f"unexpected response: {str(body)[:200]}")


def _only_task(tasks: Optional[Sequence[str]], value) -> str:
  if not tasks or len(tasks) != 1:
    raise ServingError(f"the response holds one unnamed output ({str(value)[:80]}), as TF "
                       f"Serving sends a one-task model's; the model's tasks are {tasks}")
  return tasks[0]


class RestClient:
  """POSTs to http://HOST:PORT/v1/models/NAME[/versions/V]:predict.

  `tasks` (the model's task names, from its schema) is needed for a one-task
  model, whose single output TF Serving's JSON does not name.
  """

  def __init__(self, server: str, model_name: str, version: Optional[int] = None,
               row_format: bool = False, timeout: float = 30.0,
               tasks: Optional[Sequence[str]] = None):
    path = f"/v1/models/{model_name}" + (f"/versions/{version}" if version else "")
    self.url = f"http://{server}{path}:predict"
    self.row_format = row_format
    self.timeout = timeout
    self.tasks = list(tasks) if tasks is not None else None

  def predict(self, features: Features) -> Dict[str, np.ndarray]:
    data = json.dumps(rest_request(features, self.row_format)).encode("utf-8")
    request = urllib.request.Request(self.url, data=data,
                                     headers={"Content-Type": "application/json"})
    try:
      with urllib.request.urlopen(request, timeout=self.timeout) as response:
        body = response.read()
    except urllib.error.HTTPError as e:
      try:
        message = json.loads(e.read()).get("error", str(e))
      except (ValueError, AttributeError):
        message = str(e)
      raise ServingError(f"{self.url}: HTTP {e.code}: {message}") from None
    except (http.client.HTTPException, ConnectionResetError, ConnectionAbortedError) as e:
      # A gRPC (HTTP/2) port answers an HTTP/1.1 request with binary frames
      # (BadStatusLine) or closes the connection: its bytes are not shown.
      raise ServingConnectionError(f"did not answer as a REST (HTTP/1.1) server at {self.url} "
                                   f"({type(e).__name__})", other_protocol=True) from None
    except (urllib.error.URLError, OSError) as e:
      reason = getattr(e, "reason", e)
      if isinstance(reason, ConnectionRefusedError):
        raise ServingConnectionError(f"nothing answers there (connection refused) at "
                                     f"{self.url}", refused=True) from None
      if isinstance(reason, (socket.timeout, TimeoutError)):
        raise ServingConnectionError(f"no answer from {self.url} within {self.timeout:g} s"
                                     ) from None
      raise ServingConnectionError(f"{self.url}: {reason}") from None
    try:
      answer = json.loads(body)
    except ValueError:
      raise ServingError(f"{self.url}: the answer is not JSON: {body[:80]!r}") from None
    return parse_rest_response(answer, self.tasks)


class GrpcClient:
  """Calls tensorflow.serving.PredictionService/Predict at HOST:PORT.

  Needs the `serving` extra (the TF Serving API package, which brings grpcio);
  without it, constructing one raises `MissingExtraError`, which says so.
  """

  def __init__(self, server: str, model_name: str, timeout: float = 30.0):
    purpose = "python main.py predict --protocol=grpc"
    self._grpc = need("grpc", "serving", purpose)
    self._predict_pb2 = need("tensorflow_serving.apis.predict_pb2", "serving", purpose)
    stubs = need("tensorflow_serving.apis.prediction_service_pb2_grpc", "serving", purpose)
    self.channel = self._grpc.insecure_channel(server)
    self.stub = stubs.PredictionServiceStub(self.channel)
    self.model_name = model_name
    self.timeout = timeout

  def predict(self, features: Features) -> Dict[str, np.ndarray]:
    import tensorflow as tf
    from stem_tfrs.serving.warmup import encode_predict_request
    request = self._predict_pb2.PredictRequest.FromString(encode_predict_request(
        {k: np.asarray(v) for k, v in features.items()}, self.model_name))
    try:
      response = self.stub.Predict(request, timeout=self.timeout)
    except self._grpc.RpcError as e:
      code, details = e.code(), e.details() or ""
      if code == self._grpc.StatusCode.UNAVAILABLE:
        if "Connection refused" in details:
          raise ServingConnectionError("nothing answers there (connection refused)",
                                       refused=True) from None
        if "HTTP/2" in details or "http1" in details.lower():
          raise ServingConnectionError(f"did not answer as a gRPC server ({details})",
                                       other_protocol=True) from None
        raise ServingConnectionError(f"{code.name}: {details}") from None
      raise ServingError(f"{code.name}: {details}") from None
    return {task: tf.make_ndarray(proto) for task, proto in response.outputs.items()}

  def close(self) -> None:
    self.channel.close()
