"""`python main.py predict`: score a CSV of raw features with a SavedModel or a served model.

    python main.py predict --saved_model=saved_models/stem/1700000000 --input=rows.csv --output=scores.csv
    python main.py predict --server=localhost:8500 --protocol=grpc --model_name=stem \\
        --schema=saved_models/stem/1700000000/assets.extra/schema.json --input=rows.csv --output=scores.csv
"""

from __future__ import annotations

import os
import sys
from typing import List

from absl import flags

from data_prep.writer import BadRows
from stem_tfrs.cli.errors import one_line_errors
from stem_tfrs.config import ConfigError
from stem_tfrs.serving import batch, clients

flags.DEFINE_string("saved_model", None, "A SavedModel version directory to score with, in "
                    "this process (no server).")
flags.DEFINE_string("server", None, "HOST:PORT of a TF Serving server to score with instead "
                    "(REST 8501, gRPC 8500).")
flags.DEFINE_enum("protocol", "grpc", ["grpc", "rest"], "How to talk to --server (grpc needs "
                  "the serving extra: pip install \"stem_tfrs[serving]\").")
flags.DEFINE_string("model_name", "stem", "The model's name on --server.")
flags.DEFINE_string("schema", None, "With --server: the schema.json that says the model's "
                    "inputs (an export's assets.extra/schema.json).")
flags.DEFINE_string("input", None, "CSV with a header naming every model input; a list "
                    "(multivalent) input is one '|'-separated field, a numeric one a number "
                    "(empty: missing). Any size: it is streamed.")
flags.DEFINE_string("output", None, "CSV to write: --keep_columns, then one probability "
                    "column per task.")
flags.DEFINE_list("keep_columns", [], "Input columns to copy to the output (e.g. ids); not a "
                  "task's name, which the prediction takes.")
# --strict (stop at the first bad row: one with fewer or more fields than the
# header) is `prepare`'s flag, defined by data_prep.cli.define_flags.

#: What to try when --server gave no answer in --protocol.
_HINTS = {
    ("rest", "other_protocol"): "if it is TF Serving's gRPC port (8500 by default), use "
                                "--protocol=grpc",
    ("grpc", "other_protocol"): "if it is TF Serving's REST port (8501 by default), use "
                                "--protocol=rest",
    ("rest", "refused"): "is the server running, at this host and port? (TF Serving: REST "
                         "8501, gRPC 8500)",
    ("grpc", "refused"): "is the server running, at this host and port? (TF Serving: gRPC "
                         "8500, REST 8501)",
}

FLAGS = flags.FLAGS


@one_line_errors
def run(argv: List[str]) -> int:
  del argv
  if not FLAGS.input or not FLAGS.output:
    raise ConfigError("--input and --output are required")
  if bool(FLAGS.saved_model) == bool(FLAGS.server):
    raise ConfigError("give exactly one of --saved_model and --server")
  if os.path.exists(FLAGS.output) and os.path.exists(FLAGS.input) and os.path.samefile(
      FLAGS.output, FLAGS.input):
    raise ConfigError(f"--output={FLAGS.output} is the --input file: the scores would "
                      "replace the rows; write them to another file")
  if FLAGS.saved_model:
    predict, specs = batch.saved_model_predictor(FLAGS.saved_model)
  else:
    if not FLAGS.schema:
      raise ConfigError("--server needs --schema (the export's assets.extra/schema.json)")
    specs, tasks = batch.schema_inputs_and_tasks(FLAGS.schema)
    client = (clients.GrpcClient(FLAGS.server, FLAGS.model_name) if FLAGS.protocol == "grpc"
              else clients.RestClient(FLAGS.server, FLAGS.model_name, tasks=tasks))
    predict = _naming_server(client.predict)
  bad_rows = BadRows(strict=FLAGS.strict)
  try:
    rows = batch.score_csv(FLAGS.input, FLAGS.output, predict, specs,
                           batch_size=FLAGS.eval_batch_size, keep_columns=FLAGS.keep_columns,
                           bad_rows=bad_rows)
  finally:
    if bad_rows.total:
      print(bad_rows.summary(), file=sys.stderr)
  print(f"scored {rows:,} rows -> {FLAGS.output}")
  return 0


def _naming_server(predict: batch.Predict) -> batch.Predict:
  """`predict`, whose no-answer errors name --server and say what to try."""

  def named(features):
    try:
      return predict(features)
    except clients.ServingConnectionError as e:
      kind = "refused" if e.refused else "other_protocol" if e.other_protocol else None
      hint = _HINTS.get((FLAGS.protocol, kind))
      raise ConfigError(f"--server={FLAGS.server} (--protocol={FLAGS.protocol}): {e}"
                        + (f"; {hint}" if hint else "")) from None
  return named
