"""A SavedModel held as TF Serving holds it: the C++ loader, one `Session::Run` a call.

TF Serving loads an export with TensorFlow's C++ `LoadSavedModel` (tag
"serve") and answers a Predict request with one `Session::Run` on the
signature's input and output tensors. `SavedModelSession` does the same
through TensorFlow's C API (`TF_LoadSessionFromSavedModel`, `TF_SessionRun`),
which the TensorFlow wheel ships in `libtensorflow_cc.so.2`:

    with SavedModelSession("saved_models/stem/1700000000") as session:
      probabilities = session.predict({"uid": ["u1"], "item_id": ["i9"], ...})
      request = session.request(features)   # inputs converted once
      session.run(request)                  # {output name: np.ndarray}

So it proves that the C++ loader (not only Python's `tf.saved_model.load`)
reads an export, and it times a model as the server runs it: a call is one
C function, where a Python signature call adds Python and eager
bookkeeping to every call (`benchmarks/serving.py` times both ways). What the server adds on top, the request's
network trip and its protobuf conversion, it does not measure. Linux only.
"""

from __future__ import annotations

import ctypes
import os
import weakref
from typing import Dict, Mapping, Sequence

import numpy as np
import tensorflow as tf
from tensorflow.core.protobuf import meta_graph_pb2

# TF_DataType values (they equal tensorflow.DataType's) of the dtypes an export may take or return.
_NUMPY_DTYPES = {1: np.float32, 2: np.float64, 3: np.int32, 9: np.int64, 10: np.bool_}
_STRING = 7
_TSTRING_BYTES = 24  # sizeof(TF_TString)

_P = ctypes.c_void_p
_SIGNATURES = {
    "TF_NewStatus": (_P, []), "TF_DeleteStatus": (None, [_P]),
    "TF_GetCode": (ctypes.c_int, [_P]), "TF_Message": (ctypes.c_char_p, [_P]),
    "TF_NewGraph": (_P, []), "TF_DeleteGraph": (None, [_P]),
    "TF_NewSessionOptions": (_P, []), "TF_DeleteSessionOptions": (None, [_P]),
    "TF_NewBuffer": (_P, []), "TF_DeleteBuffer": (None, [_P]),
    "TF_LoadSessionFromSavedModel": (
        _P, [_P, _P, ctypes.c_char_p, ctypes.POINTER(ctypes.c_char_p), ctypes.c_int, _P, _P, _P]),
    "TF_CloseSession": (None, [_P, _P]), "TF_DeleteSession": (None, [_P, _P]),
    "TF_GraphOperationByName": (_P, [_P, ctypes.c_char_p]),
    "TF_AllocateTensor": (_P, [ctypes.c_int, ctypes.POINTER(ctypes.c_int64), ctypes.c_int,
                               ctypes.c_size_t]),
    "TF_DeleteTensor": (None, [_P]), "TF_TensorData": (_P, [_P]),
    "TF_TensorType": (ctypes.c_int, [_P]),
    "TF_NumDims": (ctypes.c_int, [_P]), "TF_Dim": (ctypes.c_int64, [_P, ctypes.c_int]),
    "TF_StringInit": (None, [_P]), "TF_StringCopy": (None, [_P, ctypes.c_char_p, ctypes.c_size_t]),
    "TF_SessionRun": (None, [_P, _P, _P, _P, ctypes.c_int, _P, _P, ctypes.c_int, _P,
                             ctypes.c_int, _P, _P]),
}


class _Output(ctypes.Structure):
  """TF_Output: an operation's output."""
  _fields_ = [("oper", _P), ("index", ctypes.c_int)]


class _Buffer(ctypes.Structure):
  """TF_Buffer."""
  _fields_ = [("data", _P), ("length", ctypes.c_size_t), ("data_deallocator", _P)]


_library = None


def _c_api() -> ctypes.CDLL:
  """TensorFlow's C API, from the library the installed wheel ships (loaded once)."""
  global _library
  if _library is None:
    path = os.path.join(os.path.dirname(tf.__file__), "libtensorflow_cc.so.2")
    if not os.path.isfile(path):
      raise RuntimeError(f"SavedModelSession needs TensorFlow's C API library {path}, which "
                         "this TensorFlow install does not have (Linux wheels ship it)")
    library = ctypes.CDLL(path)
    for name, (restype, argtypes) in _SIGNATURES.items():
      function = getattr(library, name)
      function.restype, function.argtypes = restype, argtypes
    _library = library
  return _library


def _raise_for(lib: ctypes.CDLL, status, context: str) -> None:
  """Raises the tf.errors exception of a failed TF_Status (as a Python call would)."""
  code = lib.TF_GetCode(status)
  if code == 0:
    return
  message = f"{context}: {lib.TF_Message(status).decode(errors='replace')}"
  raise tf.compat.v1.errors.exception_type_from_error_code(code)(None, None, message)


class Request:
  """A request's input tensors, converted once: run it as often as you like.

  Holds one C tensor per signature input, freed with the request; only the
  session that made it can run it.
  """

  def __init__(self, session: "SavedModelSession", tensors: Sequence[int]):
    self.session = session
    self._tensors = (_P * len(tensors))(*tensors)
    self._free = weakref.finalize(self, _delete_tensors, session._lib, list(tensors))


def _delete_tensors(lib: ctypes.CDLL, tensors: Sequence[int]) -> None:
  for tensor in tensors:
    lib.TF_DeleteTensor(tensor)


class SavedModelSession:
  """One signature of a SavedModel, loaded by TensorFlow's C++ loader and run in one C call.

  Args:
    saved_model: An export's version directory (holding saved_model.pb).
    signature: The signature to run (TF Serving's default: "serving_default").
    tags: The MetaGraph's tags (TF Serving's: "serve").

  Raises `tf.errors` exceptions as Python's loader and signature calls do:
  NotFoundError for a missing export, InvalidArgumentError for inputs the
  model refuses (with the model's own message); KeyError for a signature
  the export does not have, ValueError for inputs that do not match it.

  `run` may be called from several threads at once (`Session::Run` is
  thread-safe); `close` must not race it.
  """

  def __init__(self, saved_model: str, signature: str = "serving_default",
               tags: Sequence[str] = ("serve",)):
    self._lib = lib = _c_api()
    self.saved_model = saved_model
    status, options = lib.TF_NewStatus(), lib.TF_NewSessionOptions()
    meta_graph = lib.TF_NewBuffer()
    self._graph = lib.TF_NewGraph()
    try:
      tag_array = (ctypes.c_char_p * len(tags))(*[t.encode() for t in tags])
      self._session = lib.TF_LoadSessionFromSavedModel(
          options, None, os.fsencode(saved_model), tag_array, len(tags), self._graph,
          meta_graph, status)
      _raise_for(lib, status, f"loading {saved_model}")
      buffer = _Buffer.from_address(meta_graph)
      graph_def = meta_graph_pb2.MetaGraphDef.FromString(
          ctypes.string_at(buffer.data, buffer.length))
    except Exception:
      if getattr(self, "_session", None):
        self.close()                     # loaded, but its MetaGraph unreadable
      else:
        self._session = None
        lib.TF_DeleteGraph(self._graph)
      raise
    finally:
      lib.TF_DeleteBuffer(meta_graph)
      lib.TF_DeleteSessionOptions(options)
      lib.TF_DeleteStatus(status)
    if signature not in graph_def.signature_def:
      self.close()
      raise KeyError(f"{saved_model} has no signature {signature!r}; it has "
                     f"{sorted(graph_def.signature_def)}")
    definition = graph_def.signature_def[signature]
    self.input_names = sorted(definition.inputs)
    self.output_names = sorted(definition.outputs)
    #: {input name: TF_DataType value}
    self.input_dtypes = {name: definition.inputs[name].dtype for name in self.input_names}
    self._inputs = (_Output * len(self.input_names))(
        *[self._tensor(definition.inputs[n].name) for n in self.input_names])
    self._outputs = (_Output * len(self.output_names))(
        *[self._tensor(definition.outputs[n].name) for n in self.output_names])

  def _tensor(self, name: str) -> _Output:
    operation, _, index = name.partition(":")
    found = self._lib.TF_GraphOperationByName(self._graph, operation.encode())
    if not found:
      raise ValueError(f"{self.saved_model}: the signature's tensor {name} is not in its graph")
    return _Output(found, int(index or 0))

  def request(self, features: Mapping[str, object]) -> Request:
    """Converts {input name: array-like} into the C tensors a call feeds.

    Every signature input is needed, and nothing else; strings (str or
    bytes) for string inputs, numbers of the input's own dtype otherwise
    (TF Serving does not convert them either).
    """
    if not self._session:
      raise RuntimeError(f"the session of {self.saved_model} is closed")
    missing = [n for n in self.input_names if n not in features]
    unknown = [n for n in features if n not in self.input_dtypes]
    if missing or unknown:
      problems = ([f"missing {missing}"] if missing else []) + (
          [f"not among them {unknown}"] if unknown else [])
      raise ValueError(f"the signature's inputs are {self.input_names}; "
                       + ", ".join(problems))
    tensors = []
    try:
      for name in self.input_names:
        tensors.append(self._input_tensor(name, features[name]))
    except Exception:
      _delete_tensors(self._lib, tensors)
      raise
    return Request(self, tensors)

  def _input_tensor(self, name: str, value: object) -> int:
    lib, dtype = self._lib, self.input_dtypes[name]
    value = value.numpy() if isinstance(value, tf.Tensor) else value
    if dtype == _STRING:
      array = np.asarray(value, dtype=object)   # keeps bytes whole (an "S" array drops NULs)
      items = [_string_bytes(name, item) for item in array.reshape(-1)]
      tensor = _allocate(lib, dtype, array.shape, _TSTRING_BYTES * len(items))
      base = lib.TF_TensorData(tensor)
      for i, data in enumerate(items):
        lib.TF_StringInit(base + _TSTRING_BYTES * i)
        lib.TF_StringCopy(base + _TSTRING_BYTES * i, data, len(data))
      return tensor
    if dtype not in _NUMPY_DTYPES:
      raise TypeError(f"input {name!r} is a {tf.as_dtype(dtype).name} tensor, which "
                      "SavedModelSession cannot feed")
    expected = np.dtype(_NUMPY_DTYPES[dtype])
    array = np.asarray(value)
    if not array.size:                          # [] has no dtype of its own
      array = array.astype(expected)
    if array.dtype != expected:
      raise ValueError(f"input {name!r} takes {expected.name}, got {array.dtype}")
    contiguous = np.ascontiguousarray(array)    # kept alive until copied
    tensor = _allocate(lib, dtype, contiguous.shape, contiguous.nbytes)
    if contiguous.nbytes:
      ctypes.memmove(lib.TF_TensorData(tensor), contiguous.ctypes.data, contiguous.nbytes)
    return tensor

  def run(self, request: Request) -> Dict[str, np.ndarray]:
    """One `Session::Run` of the signature on `request`: {output name: array}."""
    if request.session is not self:
      raise ValueError("the request was made by another SavedModelSession; make it with "
                       "this one's request()")
    if not self._session:
      raise RuntimeError(f"the session of {self.saved_model} is closed")
    lib = self._lib
    results = (_P * len(self.output_names))()
    status = lib.TF_NewStatus()
    try:
      lib.TF_SessionRun(self._session, None, self._inputs, request._tensors,
                        len(self.input_names), self._outputs, results, len(self.output_names),
                        None, 0, None, status)
      _raise_for(lib, status, f"running {self.saved_model}")
      return {name: _to_numpy(lib, tensor) for name, tensor in zip(self.output_names, results)}
    finally:
      lib.TF_DeleteStatus(status)
      _delete_tensors(lib, [t for t in results if t])

  def predict(self, features: Mapping[str, object]) -> Dict[str, np.ndarray]:
    """`run(request(features))`."""
    return self.run(self.request(features))

  def close(self) -> None:
    """Closes the session and frees it and its graph (idempotent)."""
    if getattr(self, "_session", None):
      status = self._lib.TF_NewStatus()
      self._lib.TF_CloseSession(self._session, status)
      self._lib.TF_DeleteSession(self._session, status)
      self._lib.TF_DeleteStatus(status)
      self._lib.TF_DeleteGraph(self._graph)
      self._session = None

  def __enter__(self) -> "SavedModelSession":
    return self

  def __exit__(self, *exc) -> None:
    self.close()

  def __del__(self):
    self.close()


def _string_bytes(name: str, item: object) -> bytes:
  """One element of a string input, as bytes (str as UTF-8)."""
  if isinstance(item, bytes):
    return item
  if isinstance(item, str):
    return item.encode()
  raise ValueError(f"input {name!r} takes strings, got {type(item).__name__} {item!r}")


def _allocate(lib: ctypes.CDLL, dtype: int, shape: Sequence[int], nbytes: int) -> int:
  """A new C tensor (TF_AllocateTensor), or MemoryError."""
  tensor = lib.TF_AllocateTensor(dtype, (ctypes.c_int64 * len(shape))(*shape), len(shape), nbytes)
  if not tensor:
    raise MemoryError(f"TensorFlow could not allocate a tensor of shape {list(shape)}")
  return tensor


def _to_numpy(lib: ctypes.CDLL, tensor: int) -> np.ndarray:
  """A copy of a numeric C tensor."""
  dtype = _NUMPY_DTYPES.get(lib.TF_TensorType(tensor))
  if dtype is None:
    raise TypeError(f"SavedModelSession reads numeric outputs only, not TF_DataType "
                    f"{lib.TF_TensorType(tensor)}")
  array = np.empty([lib.TF_Dim(tensor, i) for i in range(lib.TF_NumDims(tensor))], dtype)
  if array.nbytes:
    ctypes.memmove(array.ctypes.data, lib.TF_TensorData(tensor), array.nbytes)
  return array
