"""Latency and throughput of exported SavedModels, loaded as TF Serving would load them.

    python benchmarks/serving.py [--saved_model saved_models/stem/<version>] [--no_authors]
                                 [--precisions float32,bfloat16] [--output FILE.json]

Measures the given export (default: the newest under saved_models/, the
default configuration after `python main.py train`), and STEM-Net at the
authors' configuration, built on generated data and exported untrained into
a temporary directory once per `--precisions` entry (`stem_authors` in
float32, `stem_authors_bfloat16` with bfloat16 weights; its speed does not
depend on its weights).
Calls `serving_default` with batches of 1, 64 and 1024 rows of raw ids drawn
from the model's vocabularies, in two ways, after a warm-up: through TensorFlow's
C++ session (`stem_tfrs.serving.session.SavedModelSession`: the C++ SavedModel
loader and one `Session::Run` a call, as TF Serving's server runs a model,
without its network) and through the Python signature (`tf.saved_model.load`,
as a notebook calls it), alternating. Reports p50/p99 latency per call and
examples/s of each way, as JSON and as a table, with the largest difference
between the two ways' outputs, and the fraction of the forward pass's
"GEMM-only" ceiling (its dense layers' matrix products at the batch's size,
each on weights of its own so that a call reads as many weight bytes as the
model's, timed together in one call (`ceiling.forward_ceiling`), in the
export's precision from `assets.extra/export.json`; STEM and MMoE exports),
read after each of `--rounds` slices of the timing: the median reading (one
slow or fast reading cannot move it).
"""

from __future__ import annotations

import argparse
import dataclasses
import glob
import json
import os
import sys
import tempfile
import time
import types

os.environ.setdefault("TF_CPP_MIN_LOG_LEVEL", "3")
sys.path.insert(0, os.path.dirname(os.path.dirname(os.path.abspath(__file__))))  # the checkout

import stem_tfrs  # noqa: E402,F401  (Keras 2 first)
import numpy as np  # noqa: E402
import tensorflow as tf  # noqa: E402

from ceiling import dense_layers, forward_ceiling  # noqa: E402  (benchmarks/)
from data_prep.synthetic import prepare_synthetic  # noqa: E402
from machine import describe, write_report  # noqa: E402
from stem_tfrs import ModelConfig, build_model  # noqa: E402
from stem_tfrs.serving.export import EXPORT_PRECISIONS, export_saved_model  # noqa: E402
from stem_tfrs.data.schema import Schema  # noqa: E402
from stem_tfrs.serving.session import SavedModelSession  # noqa: E402


def newest_export(base: str = "saved_models") -> str:
  versions = [p for p in glob.glob(os.path.join(base, "*", "*")) if os.path.basename(p).isdigit()]
  if not versions:
    raise SystemExit(f"no SavedModel under {base}/; run `python main.py train` first "
                     "or pass --saved_model")
  return max(versions, key=lambda p: int(os.path.basename(p)))


def request(saved_model: str, batch: int, rng) -> dict:
  """A batch of raw ids: vocabulary values, one in ten never seen in training."""
  with open(os.path.join(saved_model, "assets.extra", "schema.json")) as f:
    schema = json.load(f)
  features = {}
  for feature in schema["features"]:
    vocab_file = os.path.join(saved_model, "assets", os.path.basename(feature["vocabulary_file"]))
    vocab = open(vocab_file).read().split()
    ids = [vocab[i] if rng.random() > 0.1 else "unseen"
           for i in rng.integers(0, len(vocab), batch)]
    features[feature["name"]] = (tf.constant([[v] for v in ids]) if feature.get("multivalent")
                                 else tf.constant(ids))
  return features


def measure(call, seconds: float, min_calls: int = 20) -> list:
  """Seconds per call of `call()`, over `seconds` and at least `min_calls` calls."""
  latencies = []
  start = time.perf_counter()
  while time.perf_counter() - start < seconds or len(latencies) < min_calls:
    t = time.perf_counter()
    call()
    latencies.append(time.perf_counter() - t)
  return latencies


def dtype_policy(saved_model: str) -> str:
  """The Keras dtype policy an export computes in (exports before export.json: float32)."""
  path = os.path.join(saved_model, "assets.extra", "export.json")
  if not os.path.isfile(path):
    return "float32"
  with open(path) as f:
    return json.load(f)["dtype_policy"]


def export_ceiling(saved_model: str):
  """(function: batch -> examples/s of the forward pass's matrix products alone) or None.

  See `ceiling.forward_ceiling`.

  Read from the export's assets.extra/config.json, in the precision its
  products run in (bfloat16 for the "bfloat16" and "mixed_bfloat16"
  policies; a "mixed_bfloat16" export holds float32 weights, twice the bytes
  of the ceiling's, so at small batches its ceiling is too high); None for an
  architecture without a FLOP model (only STEM and MMoE have one).
  """
  extra = os.path.join(saved_model, "assets.extra")
  with open(os.path.join(extra, "config.json")) as f:
    config = json.load(f)
  with open(os.path.join(extra, "schema.json")) as f:
    schema = json.load(f)
  dtype = tf.bfloat16 if "bfloat16" in dtype_policy(saved_model) else tf.float32
  model_config = types.SimpleNamespace(**config["model_config"])
  shape = (model_config, config["model"], len(schema["features"]), len(config["tasks"]))
  try:
    dense_layers(*shape)
  except ValueError:
    return None
  return lambda batch: forward_ceiling(*shape, batch, dtype=dtype)


def authors_exports(work_dir: str, precisions) -> list:
  """An untrained STEM-Net at the authors' configuration, exported under `work_dir` in each
  of `precisions` (`stem_authors`, `stem_authors_bfloat16`)."""
  prepare_synthetic(os.path.join(work_dir, "data"), rows=20_000)
  schema = Schema.load(os.path.join(work_dir, "data"))
  config = ModelConfig.reference()
  model = build_model("stem", schema, config)
  run_config = {"model": "stem", "tasks": schema.tasks,
                "model_config": dataclasses.asdict(config)}
  paths = [export_saved_model(model, schema, os.path.join(work_dir, "export"),
                              "stem_authors" + ("" if precision == "float32" else f"_{precision}"),
                              extra_files={"config.json": run_config}, warmup_batches=[],
                              precision=precision)
           for precision in precisions]
  tf.keras.backend.clear_session()
  return paths


#: How a call reaches the model: TF Serving's way, then a notebook's.
WAYS = ("session", "python")


def benchmark(path: str, batches, seconds: float, rounds: int = 5) -> list:
  """One result per batch size for the export at `path`, called both ways.

  `session`: a `SavedModelSession` (TensorFlow's C++ loader and one
  `Session::Run` per call, as TF Serving's server runs a model; no network).
  `python`: the `serving_default` signature of `tf.saved_model.load`, as a
  notebook calls it. Each batch size is timed in `rounds` slices of
  `seconds / rounds` per way, alternating, and the GEMM-only ceiling is read
  after every pair: on a shared machine whose speed drifts within seconds,
  both ways and the ceiling then see the same phases.
  """
  serve = tf.saved_model.load(path).signatures["serving_default"]
  rng = np.random.default_rng(0)
  ceiling = export_ceiling(path)
  with SavedModelSession(path) as session:
    return [time_batch(serve, session, request(path, batch, rng), batch, ceiling, seconds, rounds)
            for batch in batches]


def time_batch(serve, session, features, batch: int, ceiling, seconds: float, rounds: int) -> dict:
  """`benchmark`'s result for one batch of `features`."""
  prepared = session.request(features)
  calls = {"session": lambda: session.run(prepared), "python": lambda: serve(**features)}
  by_session, by_python = calls["session"](), calls["python"]()
  difference = max(float(np.abs(by_session[task] - by_python[task].numpy()).max(initial=0))
                   for task in by_session)
  for call in calls.values():
    measure(call, seconds=0.5)  # warm-up: tracing, allocation
  latencies, ceilings = {way: [] for way in WAYS}, []
  for _ in range(rounds):
    for way in WAYS:
      # at least 20 calls in all, for a p99 worth the name however slow the machine is
      latencies[way] += measure(calls[way], seconds / rounds, min_calls=-(-20 // rounds))
    if ceiling is not None:
      ceilings.append(ceiling(batch))
  result = {"batch": batch, "max_abs_difference": difference}
  for way in WAYS:
    ms = np.array(latencies[way]) * 1000.0
    result[way] = {"calls": len(ms), "p50_ms": round(float(np.percentile(ms, 50)), 3),
                   "p99_ms": round(float(np.percentile(ms, 99)), 3),
                   "examples_per_second": round(batch * len(ms) / (ms.sum() / 1000))}
  if ceilings:
    gemm_only = float(np.median(ceilings))
    result["gemm_only_examples_per_second"] = round(gemm_only)
    result["gemm_only_readings"] = [round(c) for c in ceilings]
    for way in WAYS:
      result[way]["fraction_of_gemm_only"] = round(
          result[way]["examples_per_second"] / gemm_only, 3)
  return result


def main() -> None:
  parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
  parser.add_argument("--saved_model", default=None)
  parser.add_argument("--no_authors", action="store_true",
                      help="Skip the authors' configuration.")
  parser.add_argument("--precisions", default=",".join(EXPORT_PRECISIONS),
                      help="Precisions to export the authors' configuration in.")
  parser.add_argument("--batches", default="1,64,1024")
  parser.add_argument("--seconds", type=float, default=5.0, help="Measuring time per batch size.")
  parser.add_argument("--rounds", type=int, default=5,
                      help="Slices of --seconds, each followed by a GEMM-only ceiling reading.")
  parser.add_argument("--output", default="benchmarks/results/serving.json")
  args = parser.parse_args()
  batches = [int(b) for b in args.batches.split(",")]
  paths = [args.saved_model or newest_export()]
  report = {"exports": [], "machine": describe()}
  with tempfile.TemporaryDirectory() as work:
    if not args.no_authors:
      paths += authors_exports(work, args.precisions.split(","))
    for path in paths:  # named as in TF Serving: <model_name>/<version>
      name = os.path.basename(os.path.dirname(os.path.normpath(path)))
      report["exports"].append({"name": name, "saved_model": path,
                                "dtype_policy": dtype_policy(path),
                                "results": benchmark(path, batches, args.seconds, args.rounds)})
  write_report(args.output, report)
  print(f"{'':<29}{'C++ session (as TF Serving)':^44}  {'Python signature':^31}")
  print(f"{'model':<21} {'batch':>6} {'p50 ms':>9} {'p99 ms':>9} {'examples/s':>11} "
        f"{'of GEMM-only':>12}  {'p50 ms':>9} {'p99 ms':>9} {'examples/s':>11}")
  for export in report["exports"]:
    for r in export["results"]:
      share = (f"{r['session']['fraction_of_gemm_only']:.1%}"
               if "fraction_of_gemm_only" in r["session"] else "-")
      cells = [f"{r[way]['p50_ms']:>9.3f} {r[way]['p99_ms']:>9.3f} "
               f"{r[way]['examples_per_second']:>11,}" for way in WAYS]
      print(f"{export['name']:<21} {r['batch']:>6} {cells[0]} {share:>12}  {cells[1]}")
  print(f"-> {args.output}")


if __name__ == "__main__":
  main()
