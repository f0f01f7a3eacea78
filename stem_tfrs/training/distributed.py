"""tf.distribute strategies by name, configured from TF_CONFIG, and a cluster's server process.

    strategy = distributed.make_strategy("multi_worker")   # before any other TensorFlow op
    with strategy.scope():
      model = build_model(...)

Names (`STRATEGIES`):

  default           one device (TensorFlow's default strategy)
  mirrored          all local GPUs, one replica each (MirroredStrategy)
  multi_worker      synchronous data parallelism over the workers of TF_CONFIG
                    (MultiWorkerMirroredStrategy); every worker runs `train`
  parameter_server  asynchronous training: variables live on the "ps" tasks,
                    the embedding tables split across them along their rows;
                    the "chief" task runs `train` as the coordinator, the
                    "worker" and "ps" tasks run `python main.py server`
                    (ParameterServerStrategy)

See docs/distributed.md for TF_CONFIG layouts.
"""

from __future__ import annotations

import hashlib
import json
import os
import re
import socket
from typing import Dict

from absl import logging
import tensorflow as tf

from stem_tfrs.config import STRATEGIES, ConfigError

#: Strategies whose processes form a cluster described by TF_CONFIG.
CLUSTER_STRATEGIES = ("multi_worker", "parameter_server")
#: Variables of at least twice this size are split across the parameter
#: servers (MinSizePartitioner): the embedding tables, and large expert kernels.
MIN_SHARD_BYTES = 64 << 10


def cluster_resolver() -> tf.distribute.cluster_resolver.TFConfigClusterResolver:
  """TF_CONFIG's cluster and this process's task; ConfigError if TF_CONFIG is unusable."""
  raw = os.environ.get("TF_CONFIG", "")
  if not raw:
    raise ConfigError("TF_CONFIG is not set: a cluster strategy needs "
                      '{"cluster": {...}, "task": {"type": ..., "index": ...}} '
                      "(see docs/distributed.md)")
  try:
    config = json.loads(raw)
  except json.JSONDecodeError as e:
    raise ConfigError(f"TF_CONFIG is not valid JSON: {e}")
  if not isinstance(config, dict) or "cluster" not in config or "task" not in config:
    raise ConfigError("TF_CONFIG needs both 'cluster' and 'task' (see docs/distributed.md)")
  _check_cluster(config["cluster"], config["task"])
  return tf.distribute.cluster_resolver.TFConfigClusterResolver()


def _check_cluster(cluster, task) -> None:
  """A ConfigError naming what in TF_CONFIG's cluster or task is malformed."""
  if not isinstance(cluster, dict) or not cluster:
    raise ConfigError(f"TF_CONFIG's 'cluster' must map job names to lists of 'host:port' "
                      f"addresses, got {json.dumps(cluster)}")
  for job, addresses in cluster.items():
    listed = addresses.values() if isinstance(addresses, dict) else addresses
    if (not isinstance(addresses, (list, dict)) or not listed
        or not all(isinstance(a, str) and re.fullmatch(r"\S+:\d+", a) for a in listed)):
      raise ConfigError(f"TF_CONFIG's job '{job}' must list 'host:port' addresses, got "
                        f"{json.dumps(addresses)}")
  if not isinstance(task, dict) or not isinstance(task.get("type"), str) \
      or not isinstance(task.get("index"), int) or isinstance(task.get("index"), bool):
    raise ConfigError(f"TF_CONFIG's 'task' must be {{\"type\": <job>, \"index\": <int>}}, "
                      f"got {json.dumps(task)}")
  if task["type"] not in cluster or not 0 <= task["index"] < len(cluster[task["type"]]):
    raise ConfigError(f"TF_CONFIG's task {task['type']} {task['index']} is not in its cluster "
                      f"({', '.join(f'{j}: {len(a)}' for j, a in cluster.items())})")


def _task_address(resolver) -> str:
  """This process's 'host:port' in the cluster (for messages)."""
  try:
    return resolver.cluster_spec().task_address(resolver.task_type, resolver.task_id)
  except (KeyError, ValueError):
    return "?"


def make_strategy(name: str, min_shard_bytes: int = MIN_SHARD_BYTES,
                  listen_on_all_interfaces: bool = False) -> tf.distribute.Strategy:
  """The strategy called `name`; cluster strategies read TF_CONFIG.

  Call it before any other TensorFlow op of the process:
  MultiWorkerMirroredStrategy configures the collective ops at start-up.

  Both cluster strategies start TensorFlow's gRPC server in this process (a
  multi-worker task serves its peers, a parameter-server chief its workers),
  which listens on every interface (see `run_server`): they start only when
  `listen_on_all_interfaces` acknowledges it.

  Raises:
    ConfigError: unknown name, TF_CONFIG missing or not fit for it, or a
      cluster strategy without `listen_on_all_interfaces`.
  """
  if name not in STRATEGIES:
    raise ConfigError(f"unknown strategy '{name}'; choose one of: {', '.join(STRATEGIES)}")
  if name == "default":
    return tf.distribute.get_strategy()
  if name == "mirrored":
    return tf.distribute.MirroredStrategy()
  resolver = cluster_resolver()
  cluster = resolver.cluster_spec().as_dict()
  if name == "multi_worker":
    if "ps" in cluster:
      raise ConfigError("TF_CONFIG has 'ps' tasks: use --strategy=parameter_server")
    _check_exposure(resolver, listen_on_all_interfaces)
    address = _task_address(resolver)
    logging.info("waiting for the %d task(s) of TF_CONFIG to start (this one: %s %d at %s); "
                 "only SIGKILL ends the wait", sum(map(len, cluster.values())),
                 resolver.task_type, resolver.task_id, address)
    try:
      return tf.distribute.MultiWorkerMirroredStrategy(cluster_resolver=resolver)
    except tf.errors.OpError as e:
      if "Could not start gRPC server" in e.message:
        raise ConfigError(f"could not start this task's server at {address} ("
                          f"{resolver.task_type} {resolver.task_id} of TF_CONFIG): is the port "
                          "in use, or the host not this machine?") from None
      raise
  for job in ("chief", "worker", "ps"):
    if not cluster.get(job):
      raise ConfigError(f"--strategy=parameter_server needs TF_CONFIG with a '{job}' job "
                        f"(it has: {', '.join(sorted(cluster)) or 'none'})")
  if resolver.task_type != "chief":
    raise ConfigError(f"this process is task '{resolver.task_type}' of TF_CONFIG: with "
                      "--strategy=parameter_server only the chief runs `train`; workers "
                      "and parameter servers run `python main.py server`")
  _check_exposure(resolver, listen_on_all_interfaces)
  partitioner = tf.distribute.experimental.partitioners.MinSizePartitioner(
      min_shard_bytes=min_shard_bytes, max_shards=len(cluster["ps"]))
  return tf.distribute.ParameterServerStrategy(resolver, variable_partitioner=partitioner)


def check_same_settings(strategy: tf.distribute.Strategy, settings: Dict[str, object]) -> None:
  """A ConfigError, on every worker, if the workers of a multi-worker cluster were given
  different settings: sizes that differ fail later at a collective, batch sizes or epochs
  that differ can hang the cluster.

  Each worker hashes each setting (a JSON value); one all-gather of the
  hashes tells every worker which differ.

  Args:
    strategy: The run's strategy; nothing is checked but MultiWorkerMirroredStrategy.
    settings: Name -> value, the same names on every worker.
  """
  if not isinstance(strategy, tf.distribute.MultiWorkerMirroredStrategy):
    return
  names = sorted(settings)
  hashes = [float(int.from_bytes(hashlib.sha256(json.dumps(
      settings[name], sort_keys=True, default=str).encode()).digest()[:6], "big"))
            for name in names]                                       # 48 bits: exact in float64
  local = tf.constant([hashes], tf.float64)                          # [1, settings]

  @tf.function
  def gather():
    return strategy.run(lambda: tf.distribute.get_replica_context().all_gather(local, axis=0))

  every = strategy.experimental_local_results(gather())[0].numpy()  # [replicas, settings]
  differ = [name for i, name in enumerate(names) if len(set(every[:, i])) > 1]
  if differ:
    raise ConfigError(f"the workers of the cluster were given different settings "
                      f"({', '.join(differ)}): start every worker with the same flags and data")


def refuse_cluster_strategy(command: str, config) -> None:
  """A ConfigError if `config` (a TrainConfig) asks `command`, which trains many runs in one
  process, for a cluster strategy: a process sets up its collectives once, at start-up."""
  if config.strategy in CLUSTER_STRATEGIES:
    raise ConfigError(f"{command} trains its runs one after another in one process and "
                      f"cannot use --strategy={config.strategy}: run `train` on the cluster "
                      "for each configuration instead (default and mirrored work here)")


def is_chief(strategy: tf.distribute.Strategy) -> bool:
  """Whether this process writes the run's files (config, metrics, export).

  True without a cluster, for the coordinator of a parameter-server cluster,
  and for the chief (or worker 0 when there is no chief) of a multi-worker one.
  """
  if not isinstance(strategy, tf.distribute.MultiWorkerMirroredStrategy):
    return True
  resolver = strategy.cluster_resolver
  if not resolver.task_type:
    return True
  has_chief = bool(resolver.cluster_spec().as_dict().get("chief"))
  return (resolver.task_type == "chief"
          or (not has_chief and resolver.task_type == "worker" and resolver.task_id == 0))


#: What TensorFlow's gRPC server exposes, said when `server` refuses to start and when it starts.
EXPOSURE = ("TensorFlow's gRPC server listens on 0.0.0.0:{port} (every interface of this "
            "machine) whatever host TF_CONFIG names ({host}), and runs any graph sent to it, "
            "without authentication or TLS: any process that reaches the port can read and "
            "write every file this process can")


def _is_local_host(host: str) -> bool:
  """Whether `host` resolves to addresses of this machine only (loopback included).

  An address is this machine's when a socket can be bound to it: the kernel
  refuses to bind an address that no local interface holds. Addresses of a
  family this machine does not support (IPv6 turned off) are passed over.
  """
  try:
    infos = socket.getaddrinfo(host.strip("[]"), None, proto=socket.IPPROTO_TCP)
  except (socket.gaierror, UnicodeError):
    return False
  checked = 0
  for family, _, _, _, address in infos:
    try:
      probe = socket.socket(family, socket.SOCK_STREAM)
    except OSError:
      continue
    with probe:
      try:
        probe.bind((address[0], 0) + tuple(address[2:]))
      except OSError:
        return False
    checked += 1
  return checked > 0


def _check_exposure(resolver, listen_on_all_interfaces: bool) -> None:
  """A ConfigError unless this task may start TensorFlow's gRPC server (see `run_server`);
  when it may, logs one warning that says what the port exposes."""
  address = _task_address(resolver)
  host, _, port = address.rpartition(":")
  exposure = EXPOSURE.format(port=port, host=host)
  if not listen_on_all_interfaces:
    raise ConfigError(f"--listen_on_all_interfaces is not set: {exposure}. Keep the port on "
                      "a private network (see docs/distributed.md), then pass "
                      "--listen_on_all_interfaces to start it")
  if not _is_local_host(host):
    raise ConfigError(f"TF_CONFIG names {address} for task {resolver.task_type} "
                      f"{resolver.task_id}, but {host} is not an address of this machine: "
                      "give each task the address of the machine it runs on")
  logging.warning("%s; keep port %s on a private network (docs/distributed.md)", exposure, port)


def run_server(listen_on_all_interfaces: bool = False) -> None:
  """Serves this process's task of TF_CONFIG (a parameter-server "worker" or "ps") until killed.

  TensorFlow's gRPC server cannot be bound to one interface: TensorFlow
  (2.21's grpc_server_lib.cc) listens on `0.0.0.0:<port>` whatever host
  TF_CONFIG names, and the server runs any graph sent to it, without
  authentication. So the server starts only when the caller acknowledges
  that (`listen_on_all_interfaces`), logging one warning that says it, and
  only for a host that is an address of this machine (a TF_CONFIG naming
  another machine's address is a mistake: the cluster would never reach this
  process there). docs/distributed.md says how to keep the port private.

  Args:
    listen_on_all_interfaces: The caller knows that the port is open on every
      interface and has kept it on a private network.

  Raises:
    ConfigError: TF_CONFIG is missing, names another task type, or a host that
      is not this machine's; or `listen_on_all_interfaces` is not set.
  """
  resolver = cluster_resolver()
  if resolver.task_type not in ("worker", "ps"):
    raise ConfigError(f"`server` runs the 'worker' and 'ps' tasks of a parameter-server "
                      f"cluster; TF_CONFIG says this is task '{resolver.task_type}' (the "
                      "chief runs `train --strategy=parameter_server`)")
  _check_exposure(resolver, listen_on_all_interfaces)
  # Fail over to the coordinator quickly when a peer dies (TensorFlow's recipe).
  os.environ.setdefault("GRPC_FAIL_FAST", "use_caller")
  server = tf.distribute.Server(
      resolver.cluster_spec(), job_name=resolver.task_type, task_index=resolver.task_id,
      protocol=resolver.rpc_layer or "grpc", start=True)
  server.join()


def variable_devices(model: tf.keras.Model) -> dict:
  """{variable name: [device of shard 0, shard 1, ...]} of a model's partitioned weights.

  Under ParameterServerStrategy a partitioned weight is a `ShardedVariable`;
  Keras lists its shards as weights named `<variable>/part_<i>`.
  """
  shards = {}
  for weight in model.weights:
    match = re.fullmatch(r"(.*)/part_(\d+)(:\d+)?", weight.name)
    if match:
      shards.setdefault(match.group(1), {})[int(match.group(2))] = weight.device
  return {name: [devices[i] for i in sorted(devices)] for name, devices in shards.items()}
