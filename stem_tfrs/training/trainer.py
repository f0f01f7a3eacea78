"""Training runs: validate inputs, build, compile, `model.fit` with Keras callbacks, evaluate, export.

A run directory holds everything needed to trace a reported number:

    <run_dir>/config.json        every hyper-parameter, the schema path, versions
    <run_dir>/checkpoints/       the best weights by validation AUC
    <run_dir>/logs/              TensorBoard (per-task losses, AUCs, learning rate)
    <run_dir>/backup/            BackupAndRestore state while a run is in flight
    <run_dir>/training.json      per-epoch history, wall time, examples/s
    <run_dir>/metrics.json       {"<split>": {"<task>": {"logloss", "auc", "gauc", ...}}}

A run directory's config.json and its checkpoints never disagree. `train`
into a given `run_dir` (`check_run_dir`, before anything is written):

  - starts a run where there is none (no directory, or one without any of
    config.json, checkpoints/, backup/, training.json, metrics.json);
  - resumes an interrupted run (backup/) of the same settings: the same
    model, model configuration, tasks, schema path, features (names,
    vocabulary sizes, numeric statistics) and gradient clipping (a run whose
    config.json does not name it did not clip); the other training settings
    (epochs, batch size, learning rate, ...) may change, and config.json
    then records them;
  - starts over a run of the same settings killed before its first backup
    (config.json, maybe checkpoints and logs, but neither backup/ nor
    metrics.json), as if it had never run;
  - refuses, in one line: a run of other settings, interrupted, finished or
    killed before its first backup; a finished run (metrics.json, no
    backup/), whatever its settings; run files without a config.json.

config.json is written only once the run's backup, if any, has been
checked, before the first checkpoint. Every restore (a resume, the
evaluation of the best checkpoint, `export --run_dir`) restores every
variable of the model or refuses (`checkpoints.CheckpointError`), and a
damaged checkpoint or backup is one error naming its files.
"""

from __future__ import annotations

import contextlib
import dataclasses
import json
import os
import time
from typing import Dict, List, Optional

from absl import logging
import tensorflow as tf
import tensorflow_recommenders as tfrs

from stem_tfrs import evaluation
from stem_tfrs.data import pipeline, shards
from stem_tfrs.serving import export
from stem_tfrs.training import callbacks, checkpoints, distributed
from stem_tfrs.config import ConfigError, ModelConfig, TrainConfig
from stem_tfrs.errors import first_line
from stem_tfrs.files import write_json
from stem_tfrs.models import MODELS, build_model, global_dtype_policy
from stem_tfrs.training.optimizers import FusedAdam, LazyAdam
from stem_tfrs.data.schema import Schema, SchemaError, load_stats
from stem_tfrs.errors import RunFinished, TrainingDiverged  # noqa: F401  (raised here; defined with the others)


@dataclasses.dataclass
class TrainResult:
  """What a finished run produced."""
  run_dir: str
  metrics: evaluation.Metrics
  export_path: Optional[str]
  history: Dict[str, List[float]]
  seconds: float
  model: Optional[tf.keras.Model]  # None on a non-chief worker


def default_run_dir(model_name: str) -> str:
  return os.path.join("runs", f"{model_name}-{time.strftime('%Y%m%d-%H%M%S')}")


def load_and_check(model_config: ModelConfig, config: TrainConfig) -> Schema:
  """Everything that can be checked before a run writes anything.

  Raises:
    ConfigError, SchemaError: naming what is wrong.
  """
  _check_model(model_config, config)
  schema = _checked_schema(model_config, config)
  shards.validate_shards(schema)
  return schema


def _check_model(model_config: ModelConfig, config: TrainConfig) -> None:
  if config.model not in MODELS:
    raise ConfigError(
        f"unknown model '{config.model}'; choose one of: {', '.join(MODELS)}")
  MODELS[config.model].check_config(model_config)


def _checked_schema(model_config: ModelConfig, config: TrainConfig) -> Schema:
  """The data's schema, if the model's settings suit its tasks."""
  schema = Schema.load(config.data_dir)
  model_config.task_loss_weights(schema.tasks)
  return schema


def check_settings(model_config: ModelConfig, config: TrainConfig) -> None:
  """The checks of `train` that run no TensorFlow op, for before a cluster's rendezvous.

  Creating a MultiWorkerMirroredStrategy waits for every worker of TF_CONFIG,
  indefinitely; a mistake found after it would stop only the workers that
  started. The data is checked if its schema.json exists (the embedded data
  may be prepared after the rendezvous).

  Raises:
    ConfigError, SchemaError: naming what is wrong.
  """
  _check_model(model_config, config)
  if config.export_dir:
    _check_directory("--export_dir", config.export_dir,
                     os.path.join(config.export_dir, config.model))
  if config.strategy in distributed.CLUSTER_STRATEGIES:
    if not config.run_dir:
      raise ConfigError(f"--strategy={config.strategy} needs --run_dir: every process of "
                        "the cluster must name the same run directory")
    if config.in_memory:
      raise ConfigError(f"--in_memory is for one machine; with --strategy={config.strategy} "
                        "each worker streams its share of the shards")
  if config.strategy == "multi_worker":
    cluster = distributed.cluster_resolver().cluster_spec().as_dict()
    workers = len(cluster.get("chief", [])) + len(cluster.get("worker", []))
    _check_batch_divides(config, workers, "workers of TF_CONFIG")
  if not os.path.isfile(os.path.join(config.data_dir, "schema.json")):
    return
  schema = _checked_schema(model_config, config)
  cluster = config.strategy in distributed.CLUSTER_STRATEGIES
  if cluster or config.steps_per_epoch:
    rows = _split_rows(load_stats(schema.directory), "train")
    if rows < config.batch_size and (rows or cluster):  # (0: stats.json does not say)
      raise ConfigError(f"--batch_size={config.batch_size} is larger than the train split "
                        f"({rows} rows): a cluster run, or one with --steps_per_epoch, reads "
                        f"whole batches only")


def _check_directory(flag: str, value: str, path: str) -> None:
  """A ConfigError unless `path` (under the directory `value` of `flag`) can be a directory.

  The nearest part of it that exists must be a directory: a file there
  would stop the run only after training. (Remote paths are left to their
  file system.)
  """
  if "://" in value:
    return
  part = os.path.abspath(path)
  while not os.path.lexists(part) and os.path.dirname(part) != part:
    part = os.path.dirname(part)
  if not os.path.isdir(part):
    raise ConfigError(f"{flag}={value}: {part} is a file, not a directory")


def _check_batch_divides(config: TrainConfig, parts: int, what: str) -> None:
  """A ConfigError unless a synchronous step can split `config.batch_size` into `parts`."""
  if config.batch_size % parts:
    raise ConfigError(f"--batch_size={config.batch_size} does not divide over the {parts} "
                      f"{what}: a synchronous step splits it evenly")


def _split_rows(stats: dict, split: str) -> int:
  """Rows of a split, from the data set's stats.json content (0 if it does not say)."""
  return stats.get(split, {}).get("rows") or 0


def _batches(rows: int, batch_size: int) -> int:
  """Batches of `batch_size` in `rows` rows, the last one partial."""
  return -(-rows // batch_size)


def settings_and_data(model_config: ModelConfig, config: TrainConfig, schema: Schema) -> dict:
  """A run's settings and data as JSON, wherever they lie: what makes two runs the same.

  The data is named by its resolved path, its rows and its vocabularies, so
  that data prepared again is not the same data; where the run writes
  (`run_dir`, `export_dir`) and the precision of its export are left out.
  """
  train_config = dict(dataclasses.asdict(config), data_dir=os.path.realpath(config.data_dir))
  del train_config["run_dir"], train_config["export_dir"], train_config["export_precision"]
  described = schema.to_json()
  data = {"stats": load_stats(schema.directory), "features": described["features"]}
  if "numeric_features" in described:  # (absent without any, as in schema.json)
    data["numeric_features"] = described["numeric_features"]
  return json.loads(json.dumps({
      "model_config": dataclasses.asdict(model_config), "train_config": train_config,
      "data": data}))


def _worker_settings(model_config: ModelConfig, config: TrainConfig, run_config: dict) -> dict:
  """What every worker of a cluster must agree on, by name: each hyper-parameter and the
  data's rows and vocabularies (not paths, which mounts may spell differently)."""
  settings = {f"model_config.{k}": v for k, v in dataclasses.asdict(model_config).items()}
  settings.update({f"train_config.{k}": v for k, v in dataclasses.asdict(config).items()
                   if k not in ("data_dir", "run_dir", "export_dir")})
  settings.update({"data rows": run_config["data_stats"],
                   "data features": [run_config["features"], run_config["numeric_features"]]})
  return settings


#: A run directory's files besides config.json: where one of them lies, a run has run.
RUN_FILES = ("checkpoints", callbacks.BACKUP_DIR, "metrics.json", "training.json")


def check_run_dir(run_dir: str, run_config: dict) -> None:
  """A ConfigError unless `train` may write `run_dir` for a run of `run_config` (module docstring).

  It may when `run_dir` holds no run; a run of the same settings interrupted
  (backup/: resumed) or killed before its first backup (started over).
  BackupAndRestore resumes whatever backup/ holds; weights of another
  architecture, or of vocabularies of other sizes (the data prepared again),
  would fail to load deep in Keras, and a run that stopped before its
  backup would leave its checkpoint beside another run's config.json.
  Training settings (epochs, batch size, ...) may change, gradient clipping
  not.

  Raises:
    RunFinished: `run_dir` holds a finished run (metrics.json, no backup/)
      of the same settings.
    ConfigError: it holds a run of other settings, or run files without a
      config.json.
  """
  previous = os.path.join(run_dir, "config.json")
  present = [name for name in RUN_FILES if os.path.lexists(os.path.join(run_dir, name))]
  if not os.path.isfile(previous):
    if present:
      raise ConfigError(f"{run_dir} holds {', '.join(present)} but no config.json: not a run "
                        "directory train can resume or start over; use another --run_dir")
    return
  try:
    with open(previous) as f:
      before = json.load(f)
    if not isinstance(before, dict):
      raise ValueError("not a JSON object")
  except (OSError, ValueError) as e:
    raise ConfigError(f"{previous} cannot be read ({e}): {run_dir} is not a run directory "
                      "train can resume; use another --run_dir")
  interrupted = callbacks.BACKUP_DIR in present
  finished = "metrics.json" in present and not interrupted
  changes = _changed_settings(before, run_config)
  if changes:
    other = f"of other settings ({'; '.join(changes)})"
    if interrupted:
      held = f"an interrupted run (backup/) {other}: resume it with its own, or"
    elif finished:
      held = f"a finished run {other}:"
    else:
      held = f"a run {other} that stopped before its first backup:"
    raise ConfigError(f"{run_dir} holds {held} use another --run_dir")
  if finished:
    raise RunFinished(f"{run_dir} already holds a finished run (metrics.json); use another "
                      "--run_dir", run_dir)


#: Settings added after runs were first recorded: what a run recorded before each existed
#: ran with. (Not always today's default: runs before --gradient_clip_norm did not clip.)
PREDATING_SETTINGS = {"model_config": {"initialization": "keras"},
                      "train_config": {"gradient_clip_norm": 0.0}}


def with_predating_settings(recorded: dict) -> dict:
  """`recorded` (a config.json, or `settings_and_data` as recorded) with every setting it
  predates filled in with what the run ran with, so that it compares with today's."""
  completed = dict(recorded)
  for section, settings in PREDATING_SETTINGS.items():
    if isinstance(recorded.get(section), dict):
      completed[section] = {**settings, **recorded[section]}
  return completed


def _changed_settings(before: dict, run_config: dict) -> List[str]:
  """What differs between a run dir's config.json and `run_config`, in the settings that
  decide the model's variables and their values, and gradient clipping: "key old -> new"
  each (empty: the same run)."""
  before = with_predating_settings(before)
  now = json.loads(json.dumps(run_config))  # tuples as lists, as read back
  changes = [f"{key} {before.get(key)} -> {now[key]}" for key in ("model", "tasks")
             if before.get(key) != now[key]]
  if os.path.realpath(before.get("schema", "")) != os.path.realpath(now["schema"]):
    changes.append(f"schema {before.get('schema')} -> {now['schema']}")
  changes += [f"{key} {value} -> {now['model_config'].get(key)}"
              for key, value in before.get("model_config", {}).items()
              if value != now["model_config"].get(key)]
  if "features" in before and before["features"] != now["features"]:
    old, new = ({f["name"]: f for f in c["features"]} for c in (before, now))
    names = sorted(n for n in old.keys() | new.keys() if old.get(n) != new.get(n))
    changes.append(f"features {', '.join(names)}: the data was prepared again")
  if before.get("numeric_features", []) != now["numeric_features"]:
    changes.append("numeric features: the data was prepared again")
  # Clipping decides every step's update: a resume under another norm would mix two
  # optimizations.
  clip_before = before.get("train_config", {}).get("gradient_clip_norm")
  clip_now = now["train_config"]["gradient_clip_norm"]
  if clip_before != clip_now:
    changes.append(f"gradient_clip_norm {clip_before} -> {clip_now}")
  return changes


def train(model_config: ModelConfig, config: TrainConfig, verbose: int = 1,
          strategy: Optional[tf.distribute.Strategy] = None) -> TrainResult:
  """Trains, evaluates (valid and test, exact metrics) and exports one model.

  Under a cluster strategy every process of the cluster calls `train` (the
  parameter-server coordinator alone, its workers and servers run
  `distributed.run_server`); only the chief writes config.json, metrics.json,
  training.json and the export, which it builds from the best checkpoint into
  a single-machine model, the same artifact whatever strategy trained it.

  Args:
    model_config: The architecture's hyper-parameters.
    config: Data, run directory, optimizer, stopping, strategy.
    verbose: Keras `fit` verbosity (1: progress bars, 2: a line per epoch).
    strategy: A strategy to use instead of the one `config.strategy` names.

  Returns:
    The run's `TrainResult`; the trained model carries the best weights. A
    non-chief worker returns empty metrics and no model.

  Raises:
    ConfigError, SchemaError: before anything is written.
    tf.errors.OpError: bad data met while training (e.g. a label not 0/1);
      metrics.json and the export are then not written.
    TrainingDiverged: a loss became NaN or infinite; nor are they then.
  """
  check_settings(model_config, config)  # no TensorFlow op: before a cluster's rendezvous
  # MultiWorkerMirroredStrategy must exist before any other op runs.
  strategy = strategy or distributed.make_strategy(config.strategy)
  schema = load_and_check(model_config, config)
  stats = load_stats(schema.directory)
  for warning in MODELS[config.model].data_warnings(
      schema.tasks, stats.get("train", {}).get("positive_rate", {})):
    logging.warning("%s", warning)
  if config.strategy == "multi_worker":  # (the workers' devices may make more replicas)
    _check_batch_divides(config, strategy.num_replicas_in_sync,
                         f"replicas of --strategy={config.strategy}")
  run_dir = config.run_dir or default_run_dir(config.model)
  chief = distributed.is_chief(strategy)
  described = schema.to_json()
  run_config = {
      "model": config.model,
      "schema": os.path.join(schema.directory, "schema.json"),
      "tasks": schema.tasks,
      "features": described["features"],  # names, vocabulary sizes
      "numeric_features": described.get("numeric_features", []),  # names, statistics
      "model_config": dataclasses.asdict(model_config),
      "train_config": dataclasses.asdict(config),
      "data_stats": stats,
      "versions": {"tensorflow": tf.__version__, "tensorflow_recommenders": tfrs.__version__},
  }
  distributed.check_same_settings(strategy, _worker_settings(model_config, config, run_config))
  check_run_dir(run_dir, run_config)
  os.makedirs(run_dir, exist_ok=True)

  tf.keras.utils.set_random_seed(config.seed)
  if config.deterministic:
    tf.config.experimental.enable_op_determinism()
  with global_dtype_policy(config.mixed_precision), _damaged_shards_named(schema):
    return _train(schema, model_config, config, run_dir, run_config, verbose, strategy, chief)


@contextlib.contextmanager
def _damaged_shards_named(schema: Schema):
  """Turns the shard reader's DataLossError ("corrupted record at N", no file) into a
  SchemaError naming each damaged shard and where (`shards.find_damaged_shards`).

  validate_shards names shards cut short before a run starts; this names the
  damage that keeps a shard's size, once the reader has met it.
  """
  try:
    yield
  except tf.errors.DataLossError as e:
    damaged = shards.find_damaged_shards(schema)
    if not damaged:
      raise
    raise SchemaError(f"{'; '.join(damaged)} (TensorFlow: {first_line(e.message)}); copy or "
                      "prepare the data set again") from None


def _train(schema: Schema, model_config: ModelConfig, config: TrainConfig, run_dir: str,
           run_config: dict, verbose: int, strategy: tf.distribute.Strategy,
           chief: bool) -> TrainResult:
  """One run, step by step: build and compile; inputs; fit; evaluate, report and export."""
  stats = run_config["data_stats"]
  model = _build_and_compile(schema, model_config, config, strategy,
                             _steps_per_execution(schema, config, stats))
  run_callbacks = _callbacks_with_checked_backup(model, schema, config, run_dir, chief)
  if chief:  # the backup, if any, suits this run: config.json may name it
    write_json(os.path.join(run_dir, "config.json"), run_config)
  inputs = _inputs(schema, config, stats, run_dir)
  fitted = _fit(model, schema, inputs, config, run_callbacks, verbose, run_dir)
  if not chief:
    return TrainResult(run_dir=run_dir, metrics={}, export_path=None, history=fitted.history,
                       seconds=time.time() - fitted.start, model=None)
  sharded = distributed.variable_devices(model)
  model = _best_model(model, schema, model_config, config, strategy, run_dir)
  metrics = _evaluate(model, schema, config)
  _write_reports(run_dir, metrics, fitted, inputs, config, strategy, sharded)
  export_path = _export(model, schema, config, run_config)
  return TrainResult(run_dir=run_dir, metrics=metrics, export_path=export_path,
                     history=fitted.history, seconds=time.time() - fitted.start, model=model)


def _steps_per_execution(schema: Schema, config: TrainConfig, stats: dict) -> int:
  """`config.steps_per_execution`, or 1 where stats.json gives no row counts to size epochs by."""
  train_rows, valid_rows = _split_rows(stats, "train"), _split_rows(stats, "valid")
  if config.steps_per_execution > 1 and not (
      (train_rows or config.steps_per_epoch) and valid_rows):
    logging.warning("%s/stats.json gives no row count of the train or valid split: "
                    "one step per execution", schema.directory)
    return 1
  return config.steps_per_execution


def make_optimizer(config: TrainConfig) -> tf.keras.optimizers.Optimizer:
  """The optimizer `config` names, its learning rate and gradient clipping set.

  `config.gradient_clip_norm` > 0 clips the global norm of every step's
  gradients, all variables' together, as the authors' trainer (FuxiCTR's
  `max_gradient_norm`) does; 0 leaves them as they are. Keras' optimizer
  clips after a distribution strategy has summed the replicas' gradients,
  so the norm is that of the whole step's gradient (`FusedAdam` docstring).
  """
  optimizer = LazyAdam if config.optimizer == "lazy_adam" else FusedAdam
  return optimizer(config.learning_rate, global_clipnorm=config.gradient_clip_norm or None)


def _build_and_compile(schema: Schema, model_config: ModelConfig, config: TrainConfig,
                       strategy: tf.distribute.Strategy,
                       steps_per_execution: int) -> tf.keras.Model:
  """The model, its variables placed by `strategy`, compiled with the run's optimizer."""
  with strategy.scope():
    model = build_model(config.model, schema, model_config)
    model.compile(optimizer=make_optimizer(config), steps_per_execution=steps_per_execution)
  return model


def _callbacks_with_checked_backup(model: tf.keras.Model, schema: Schema, config: TrainConfig,
                                   run_dir: str, chief: bool) -> List[tf.keras.callbacks.Callback]:
  """The run's callbacks, once a backup to resume has been checked against `model`.

  The check comes before anything of the run is written (TensorBoard writes
  as `fit` begins): the backup must restore every variable of the model and
  optimizer.
  """
  run_callbacks = callbacks.for_run(config, schema.tasks, run_dir, chief)
  backup = next(c for c in run_callbacks if isinstance(c, callbacks.CheckedBackupAndRestore))
  callbacks.restore_backup(model, backup.backup_dir)
  backup.checked = True
  return run_callbacks


@dataclasses.dataclass
class _Inputs:
  """What `model.fit` reads, and the arguments of `fit` that go with it."""
  train: object  # a tf.data.Dataset, or a DatasetCreator on a cluster
  valid: object
  fit_args: Dict[str, int]  # steps_per_epoch, validation_steps where `fit` needs them
  epoch_rows: int  # training examples of an epoch (0: stats.json does not say)


def _inputs(schema: Schema, config: TrainConfig, stats: dict, run_dir: str) -> _Inputs:
  """The train and valid inputs; a resumed run's train input goes on where the run stopped."""
  train_rows, valid_rows = _split_rows(stats, "train"), _split_rows(stats, "valid")
  valid = _known_length(pipeline.make_dataset(schema, "valid", config.eval_batch_size),
                        valid_rows, config.eval_batch_size)
  fit_args = {}
  resumed_after = callbacks.epochs_done(run_dir)
  if config.strategy in distributed.CLUSTER_STRATEGIES:
    train, fit_args["steps_per_epoch"] = _cluster_train_input(schema, config, train_rows)
  else:
    # With steps_per_epoch, one stream of passes in full batches (each pass in its own order).
    train = pipeline.make_dataset(
        schema, "train", config.batch_size, shuffle=True, seed=config.seed,
        shuffle_buffer=config.shuffle_buffer, in_memory=config.in_memory,
        drop_remainder=bool(config.steps_per_epoch))
    if config.steps_per_epoch:
      train = _stream(train, resumed_after * config.steps_per_epoch,
                      train_rows // config.batch_size)
      fit_args["steps_per_epoch"] = config.steps_per_epoch
    else:
      if resumed_after:
        _skip_epochs(train, resumed_after)
      train = _known_length(train, train_rows, config.batch_size)
  if config.strategy == "parameter_server":
    valid, fit_args["validation_steps"] = _parameter_server_valid_input(
        schema, config, valid_rows)
  epoch_rows = (fit_args["steps_per_epoch"] * config.batch_size  # an epoch of fixed steps
                if "steps_per_epoch" in fit_args else train_rows)
  return _Inputs(train=train, valid=valid, fit_args=fit_args, epoch_rows=epoch_rows)


@dataclasses.dataclass
class _Fitted:
  """What `fit` left: every epoch's logs and training time, those before a resume included."""
  history: Dict[str, List[float]]
  train_seconds: float
  start: float  # time.time() as this session's fit began


def _fit(model: tf.keras.Model, schema: Schema, inputs: _Inputs, config: TrainConfig,
         run_callbacks: List[tf.keras.callbacks.Callback], verbose: int,
         run_dir: str) -> _Fitted:
  """`model.fit`, then the backup's removal; TrainingDiverged if a loss became non-finite."""
  logging.info("training %s on %s into %s", config.model, schema.directory, run_dir)
  start = time.time()
  model.fit(inputs.train, validation_data=inputs.valid, epochs=config.epochs,
            callbacks=run_callbacks, verbose=verbose, **inputs.fit_args)
  resumed = next(c for c in run_callbacks if isinstance(c, callbacks.ResumedCallbackState))
  fitted = _Fitted(history=resumed.history,
                   train_seconds=resumed.earlier_seconds + time.time() - start, start=start)
  # After a finished fit every worker's BackupAndRestore has removed its own
  # part of backup/; whichever worker gets here last removes the directory.
  try:
    os.rmdir(os.path.join(run_dir, callbacks.BACKUP_DIR))
  except OSError:  # absent, or another worker's part is still there
    pass
  (divergence,) = [c for c in run_callbacks if isinstance(c, callbacks.StopOnNonFiniteLoss)]
  if divergence.diverged:
    raise TrainingDiverged(f"training diverged: {divergence.diverged}; no metrics or export "
                           f"were written (try a lower --learning_rate)")
  return fitted


def _best_model(model: tf.keras.Model, schema: Schema, model_config: ModelConfig,
                config: TrainConfig, strategy: tf.distribute.Strategy,
                run_dir: str) -> tf.keras.Model:
  """The model with the best checkpoint's weights, on one machine.

  Under a strategy other than the default one, a model built anew outside
  it: no variable is mirrored, sharded or remote, and the SavedModel does
  not depend on the cluster.
  """
  if strategy is not tf.distribute.get_strategy():
    with tf.distribute.get_strategy().scope():
      model = build_model(config.model, schema, model_config)
  checkpoints.load_weights(model, os.path.join(run_dir, "checkpoints", "best"))
  return model


def _evaluate(model: tf.keras.Model, schema: Schema, config: TrainConfig) -> evaluation.Metrics:
  """Exact metrics of the valid and test splits."""
  return {split: evaluation.evaluate(
              model, schema, pipeline.make_dataset(schema, split, config.eval_batch_size))
          for split in ("valid", "test")}


def _write_reports(run_dir: str, metrics: evaluation.Metrics, fitted: _Fitted, inputs: _Inputs,
                   config: TrainConfig, strategy: tf.distribute.Strategy,
                   sharded: dict) -> None:
  """training.json (history, wall time, examples/s) and metrics.json."""
  epochs_run = len(fitted.history.get("loss", []))
  train_seconds = fitted.train_seconds
  write_json(os.path.join(run_dir, "training.json"), {
      "strategy": config.strategy,
      "replicas": strategy.num_replicas_in_sync,
      "sharded_variables": sharded,
      "epochs_run": epochs_run,
      "train_seconds": train_seconds,  # every session's, with each epoch's validation
      "train_examples_per_second": (inputs.epoch_rows * epochs_run / train_seconds
                                    if inputs.epoch_rows and epochs_run and train_seconds > 0
                                    else None),
      "history": fitted.history,
  })
  write_json(os.path.join(run_dir, "metrics.json"), metrics)


def _export(model: tf.keras.Model, schema: Schema, config: TrainConfig,
            run_config: dict) -> Optional[str]:
  """The SavedModel's path under `config.export_dir`, or None where it is empty."""
  if not config.export_dir:
    return None
  export_path = export.export_saved_model(
      model, schema, config.export_dir, config.model,
      extra_files={"config.json": run_config}, precision=config.export_precision)
  logging.info("exported %s", export_path)
  return export_path


def _skip_epochs(dataset: tf.data.Dataset, epochs: int) -> None:
  """Moves a reshuffled dataset's seeds on by `epochs`, as a resumed run's first epoch needs.

  Each pass over the dataset draws its order from seeds that advance when
  the pass reads its first batch; a new process starts them over. Reading
  one batch of as many passes as the interrupted run finished gives the
  resumed epoch the order the uninterrupted run would have had.
  """
  logging.info("resuming: moving the shuffle on by %d passes", epochs)
  for _ in range(epochs):
    next(iter(dataset))


def _stream(one_pass: tf.data.Dataset, steps_done: int, pass_batches: int) -> tf.data.Dataset:
  """`one_pass` repeated, from the batch after the first `steps_done` of the stream.

  A resumed run thus reads on where the interrupted one stopped: whole passes
  are passed over as `_skip_epochs` does (one batch read each, which moves
  their seeds on), and the batches of the last, partial one are read and
  dropped. `pass_batches`: full batches in a pass (0 if unknown: every
  batch done is read again).
  """
  passes, within = divmod(steps_done, pass_batches) if pass_batches else (0, steps_done)
  if passes:
    _skip_epochs(one_pass, passes)
  if within:
    logging.info("resuming: reading and dropping %d batches of the current pass", within)
  return one_pass.repeat().skip(within)


def _known_length(dataset: tf.data.Dataset, rows: int, batch_size: int) -> tf.data.Dataset:
  """`dataset` (batches of `rows` rows, the last one partial) with its length declared.

  Keras then knows an epoch's steps before the first one ends: it runs
  whole executions of `steps_per_execution` steps and a shorter last one,
  where with an unknown length the epoch's last execution would stop midway
  and its logs be lost. The declaration is checked one way only: shards that
  give fewer batches stop training with an error naming both numbers, while
  batches past the declared number are never read. data_prep writes the
  shards and stats.json together; a split changed after it must be prepared
  again.
  """
  if not rows:
    return dataset
  return dataset.apply(tf.data.experimental.assert_cardinality(_batches(rows, batch_size)))


def _cluster_train_input(schema: Schema, config: TrainConfig, rows: int):
  """(DatasetCreator, steps per epoch) of a cluster run: each worker reads its own share.

  `config.batch_size` is the global batch of one synchronous step (split over
  the replicas) with multi_worker, and each worker's batch with
  parameter_server. An epoch is `config.steps_per_epoch` steps (by default
  `train rows // batch_size`) over a repeated stream, so that every worker
  runs the same number of steps.
  """
  # Parameter-server workers cannot tell each other apart in `dataset_fn`:
  # an unseeded shuffle gives each its own order.
  seed = None if config.strategy == "parameter_server" else config.seed

  def dataset_fn(input_context: tf.distribute.InputContext) -> tf.data.Dataset:
    batch = input_context.get_per_replica_batch_size(config.batch_size)
    return pipeline.make_dataset(schema, "train", batch, shuffle=True, seed=seed,
                             shuffle_buffer=config.shuffle_buffer, drop_remainder=True,
                             input_context=input_context).repeat()

  return (tf.keras.utils.experimental.DatasetCreator(dataset_fn),
          config.steps_per_epoch or rows // config.batch_size)


def _parameter_server_valid_input(schema: Schema, config: TrainConfig, rows: int):
  """(DatasetCreator, steps) of the per-epoch validation of a parameter-server run.

  The workers evaluate in parallel, each from its own stream of the split; an
  unseeded shuffle makes each stream a different random order, so the epoch's
  validation AUC is an estimate from about one split's worth of rows drawn
  across the workers. (The metrics.json figures are exact: the chief computes
  them over whole splits after training.)
  """
  steps = max(1, _batches(rows, config.eval_batch_size))

  def dataset_fn(input_context: tf.distribute.InputContext) -> tf.data.Dataset:
    del input_context  # every worker reads the whole split, in its own order
    return pipeline.make_dataset(schema, "valid", config.eval_batch_size, shuffle=True,
                             seed=None, shuffle_buffer=config.shuffle_buffer).repeat()

  return tf.keras.utils.experimental.DatasetCreator(dataset_fn), steps
