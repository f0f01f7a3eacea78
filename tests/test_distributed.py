"""tf.distribute clusters on loopback: `train` under multi_worker and parameter_server.

Every process is a real `python main.py` process with its own TF_CONFIG, and
talks gRPC to the others on 127.0.0.1 only. Each test kills whatever is left
of its cluster when it ends, passed or not.
"""

import contextlib
import json
import os
import re
import signal
import socket
import subprocess
import sys
import time

import numpy as np
import pytest
import tensorflow as tf

from tests.support import REPO, TINY_MODEL_FLAGS
from stem_tfrs.data import pipeline
from stem_tfrs.data.schema import Schema

pytestmark = pytest.mark.slow  # whole runs, clusters or subprocess drills: not in the fast tier

TIMEOUT = 420


def free_ports(n):
  """n distinct free TCP ports on 127.0.0.1."""
  with contextlib.ExitStack() as stack:
    sockets = [stack.enter_context(socket.socket()) for _ in range(n)]
    for s in sockets:
      s.bind(("127.0.0.1", 0))
    return [s.getsockname()[1] for s in sockets]


class Cluster:
  """Processes started with TF_CONFIG; `close` kills the ones still running."""

  def __init__(self, cluster, log_dir):
    self.cluster = cluster
    self.log_dir = log_dir
    self.processes = {}

  def start(self, task_type, index, args):
    name = f"{task_type}{index}"
    env = dict(os.environ, TF_CPP_MIN_LOG_LEVEL="3", TF_CONFIG=json.dumps(
        {"cluster": self.cluster, "task": {"type": task_type, "index": index}}))
    log = open(os.path.join(self.log_dir, f"{name}.log"), "w")
    self.processes[name] = subprocess.Popen(
        [sys.executable, "main.py", *args], cwd=REPO, env=env, stdout=log,
        stderr=subprocess.STDOUT, start_new_session=True)
    return self.processes[name]

  def log(self, name, tail=4000):
    with open(os.path.join(self.log_dir, f"{name}.log")) as f:
      text = f.read()
    return text[-tail:] if tail else text

  def wait(self, name, timeout=TIMEOUT):
    try:
      code = self.processes[name].wait(timeout=timeout)
    except subprocess.TimeoutExpired:
      pytest.fail(f"{name} still running after {timeout} s:\n{self.log(name)}")
    assert code == 0, f"{name} exited with {code}:\n{self.log(name)}"

  def close(self):
    for process in self.processes.values():
      if process.poll() is None:
        os.killpg(process.pid, signal.SIGKILL)
      process.wait(timeout=30)


@pytest.fixture
def cluster_factory(tmp_path):
  clusters = []

  def make(cluster):
    clusters.append(Cluster(cluster, str(tmp_path)))
    return clusters[-1]

  yield make
  for cluster in clusters:
    cluster.close()
  for cluster in clusters:  # no orphan: every process has exited
    assert all(p.poll() is not None for p in cluster.processes.values())


def train_args(tiny_data, run_dir, export_dir, *extra):
  return ["train", f"--data_dir={tiny_data}", f"--run_dir={run_dir}",
          f"--export_dir={export_dir}", "--eval_batch_size=4096", "--verbose=2",
          "--listen_on_all_interfaces",
          *TINY_MODEL_FLAGS, *extra]


def assert_serves_like_single_machine(export_path, trained_run, tiny_data):
  """Same signature as a single-machine export; serves raw test rows."""
  loaded = tf.saved_model.load(export_path).signatures["serving_default"]
  reference = tf.saved_model.load(trained_run.export_path).signatures["serving_default"]
  assert loaded.structured_input_signature == reference.structured_input_signature
  assert (set(loaded.structured_outputs) == set(reference.structured_outputs)
          and all(loaded.structured_outputs[k].shape.as_list()
                  == reference.structured_outputs[k].shape.as_list()
                  for k in reference.structured_outputs))
  features, _ = next(iter(pipeline.make_dataset(Schema.load(tiny_data), "test", 64)))
  outputs = loaded(**features)
  for task in ("finish", "like"):
    p = outputs[task].numpy()
    assert p.shape == (64,) and np.all((p > 0) & (p < 1))


def exports(export_dir):
  base = os.path.join(export_dir, "stem")
  return [os.path.join(base, v) for v in os.listdir(base) if v.isdigit()]


def test_two_workers_train_in_sync_and_only_the_chief_writes(
    tiny_data, trained_run, tmp_path, cluster_factory):
  ports = free_ports(2)
  cluster = cluster_factory({"worker": [f"127.0.0.1:{p}" for p in ports]})
  run_dir, export_dir = tmp_path / "run", tmp_path / "export"
  for i in range(2):
    cluster.start("worker", i, train_args(tiny_data, run_dir, export_dir, "--strategy=multi_worker",
                                          "--epochs=2", "--batch_size=512"))
  for i in range(2):
    cluster.wait(f"worker{i}")
  assert "worker done" in cluster.log("worker1")
  training = json.loads((run_dir / "training.json").read_text())
  assert training["strategy"] == "multi_worker" and training["replicas"] == 2
  assert training["epochs_run"] == 2
  assert (run_dir / "checkpoints" / "best.index").exists()
  metrics = json.loads((run_dir / "metrics.json").read_text())
  assert metrics["test"]["finish"]["auc"] > 0.55
  assert sorted(os.listdir(run_dir)) == ["checkpoints", "config.json", "logs", "metrics.json",
                                          "training.json"]  # nothing left by worker 1
  [export_path] = exports(export_dir)
  assert_serves_like_single_machine(export_path, trained_run, tiny_data)


def start_parameter_server_cluster(cluster_factory, tiny_data, run_dir, export_dir, *extra):
  ports = free_ports(5)
  address = [f"127.0.0.1:{p}" for p in ports]
  cluster = cluster_factory({"chief": address[:1], "worker": address[1:3], "ps": address[3:]})
  for task_type, count in (("ps", 2), ("worker", 2)):
    for i in range(count):
      cluster.start(task_type, i, ["server", "--listen_on_all_interfaces"])
  cluster.start("chief", 0, train_args(tiny_data, run_dir, export_dir,
                                       "--strategy=parameter_server", *extra))
  return cluster


def test_parameter_servers_hold_the_embedding_shards_and_the_export_is_single_machine(
    tiny_data, trained_run, tmp_path, cluster_factory):
  run_dir, export_dir = tmp_path / "run", tmp_path / "export"
  # D = 32: the fused table (1,138 rows x 3 tables x 32) is 437 KiB, over the
  # 128 KiB from which variables are split. The lazy Adam, which big tables want, updates
  # each shard's looked-up rows (the killed-worker test below runs the default Adam).
  cluster = start_parameter_server_cluster(cluster_factory, tiny_data, run_dir, export_dir,
                                           "--epochs=1", "--batch_size=512", "--embedding_dim=32",
                                           "--optimizer=lazy_adam")
  cluster.wait("chief0")
  training = json.loads((run_dir / "training.json").read_text())
  assert training["strategy"] == "parameter_server"
  shards = training["sharded_variables"]
  [table] = [name for name in shards if "fused" in name]
  assert sorted(shards[table]) == ["/job:ps/replica:0/task:0/device:CPU:0",
                                   "/job:ps/replica:0/task:1/device:CPU:0"]
  metrics = json.loads((run_dir / "metrics.json").read_text())
  assert metrics["test"]["finish"]["auc"] > 0.55
  [export_path] = exports(export_dir)
  assert_serves_like_single_machine(export_path, trained_run, tiny_data)
  # The servers serve until stopped; they must still be up (and are killed by the fixture).
  assert all(cluster.processes[n].poll() is None for n in ("ps0", "ps1", "worker0", "worker1"))


def test_a_killed_worker_does_not_lose_the_parameter_server_run(
    tiny_data, tmp_path, cluster_factory):
  run_dir, export_dir = tmp_path / "run", tmp_path / "export"
  cluster = start_parameter_server_cluster(cluster_factory, tiny_data, run_dir, export_dir,
                                           "--epochs=3", "--batch_size=128")
  deadline = time.time() + TIMEOUT
  while not (run_dir / "logs" / "train").exists():  # fit has begun
    assert cluster.processes["chief0"].poll() is None, cluster.log("chief0")
    assert time.time() < deadline, cluster.log("chief0")
    time.sleep(0.5)
  time.sleep(3)
  os.killpg(cluster.processes["worker1"].pid, signal.SIGKILL)
  cluster.wait("chief0")
  # The coordinator saw the worker go and carried on with the other one.
  assert "Worker /job:worker/replica:0/task:1 failed" in cluster.log("chief0", tail=None)
  training = json.loads((run_dir / "training.json").read_text())
  assert training["epochs_run"] == 3
  assert (run_dir / "metrics.json").exists() and exports(export_dir)


@pytest.mark.parametrize("tf_config, message", [
    ({"cluster": {"worker": "127.0.0.1:1"}, "task": {"type": "worker", "index": 0}},
     r"job 'worker' must list 'host:port' addresses, got \"127.0.0.1:1\""),
    ({"cluster": [], "task": {"type": "worker", "index": 0}},
     r"'cluster' must map job names to lists of 'host:port' addresses, got \[\]"),
    ({"cluster": {}, "task": {"type": "worker", "index": 0}}, r"got \{\}"),
    ({"cluster": {"worker": ["127.0.0.1"]}, "task": {"type": "worker", "index": 0}},
     r"job 'worker' must list 'host:port' addresses"),
    ({"cluster": {"worker": ["127.0.0.1:1"]}, "task": {"type": "worker", "index": "0"}},
     r"'task' must be \{\"type\": <job>, \"index\": <int>\}"),
    ({"cluster": {"worker": ["127.0.0.1:1"]}, "task": {"type": "worker", "index": 1}},
     r"task worker 1 is not in its cluster \(worker: 1\)"),
])
def test_a_malformed_tf_config_is_named(monkeypatch, tf_config, message):
  from stem_tfrs.training import distributed
  from stem_tfrs.config import ConfigError
  monkeypatch.setenv("TF_CONFIG", json.dumps(tf_config))
  with pytest.raises(ConfigError, match=message):
    distributed.cluster_resolver()


BAD_WORKER_FLAGS = [
    ([], r"--strategy=multi_worker needs --run_dir"),
    (["--run_dir=RUN", "--batch_size=511"],
     r"--batch_size=511 does not divide over the 2 workers of TF_CONFIG"),
    (["--run_dir=RUN", "--model=mmoe", "--num_shared_experts=0"],
     r"MMoE mixes shared experts only"),
    (["--run_dir=RUN", "--data_dir=DATA", "--batch_size=100000"],
     r"--batch_size=100000 is larger than the train split"),
]


@pytest.fixture(scope="module")
def refusals(tiny_data, tmp_path_factory):
  """Worker 0 of a 2-worker TF_CONFIG run with each of BAD_WORKER_FLAGS: one directory per
  case, and {case index: cli_cases result (code, stdout, stderr)}.

  Worker 1 never starts: creating the strategy would wait for it forever. The cases run
  as `main.py` runs each, one after another in one `tests/cli_cases.py` process (TensorFlow
  imported once), which is killed if a worker still waits after the timeout.
  """
  root = tmp_path_factory.mktemp("refusals")
  tf_config = json.dumps({"cluster": {"worker": [f"127.0.0.1:{p}" for p in free_ports(2)]},
                          "task": {"type": "worker", "index": 0}})
  cases = []
  for i, (flags, _) in enumerate(BAD_WORKER_FLAGS):
    cwd = root / str(i)
    cwd.mkdir()
    flags = [f.replace("RUN", str(cwd / "run")).replace("DATA", tiny_data) for f in flags]
    cases.append({"id": str(i), "cwd": str(cwd), "env": {"TF_CONFIG": tf_config},
                  "argv": ["train", "--strategy=multi_worker", "--epochs=1",
                           "--listen_on_all_interfaces", f"--data_dir={tiny_data}",
                           *TINY_MODEL_FLAGS, *flags]})
  (root / "cases.json").write_text(json.dumps(cases))
  try:
    done = subprocess.run([sys.executable, os.path.join(REPO, "tests", "cli_cases.py"),
                           str(root / "cases.json"), str(root / "results.json")], cwd=REPO,
                          env=dict(os.environ, TF_CPP_MIN_LOG_LEVEL="3"), capture_output=True,
                          text=True, timeout=90 * len(cases))
  except subprocess.TimeoutExpired as e:
    pytest.fail(f"a worker 0 still waiting for its peer:\n{str(e.stderr)[-3000:]}")
  assert done.returncode == 0, done.stderr[-3000:]
  results = json.loads((root / "results.json").read_text())
  return root, {int(result["id"]): result for result in results}


@pytest.mark.parametrize("flags, message", BAD_WORKER_FLAGS)
def test_a_worker_refuses_bad_flags_before_waiting_for_its_peers(refusals, flags, message):
  root, results = refusals
  case = BAD_WORKER_FLAGS.index((flags, message))
  result = results[case]
  assert result["code"] == 1, result["stdout"][-3000:] + result["stderr"][-3000:]
  last = (result["stdout"] + result["stderr"]).strip().splitlines()[-1]
  assert last.startswith("error: ") and re.search(message, last), last
  assert not (root / str(case) / "run").exists()


def test_benchmark_and_tune_refuse_a_cluster_strategy(tiny_data, tmp_path):
  from stem_tfrs import TrainConfig
  from stem_tfrs.training import comparison, tuning
  from stem_tfrs.config import ConfigError
  from tests.support import tiny_model_config
  config = TrainConfig(data_dir=tiny_data, strategy="multi_worker", run_dir=str(tmp_path))
  with pytest.raises(ConfigError, match=r"benchmark trains its runs one after another in one "
                                        r"process and cannot use --strategy=multi_worker"):
    comparison.run_benchmark(tiny_model_config(), config, comparison.BenchmarkConfig(
        models=("stem",), output_dir=str(tmp_path / "bench")))
  with pytest.raises(ConfigError, match=r"tune trains its runs .* --strategy=multi_worker"):
    tuning.tune(tiny_model_config(), config, str(tmp_path / "tune"))
  assert sorted(os.listdir(tmp_path)) == []


def test_workers_given_different_settings_all_stop_and_say_which(
    tiny_data, tmp_path, cluster_factory):
  cluster = cluster_factory({"worker": [f"127.0.0.1:{p}" for p in free_ports(2)]})
  run_dir, export_dir = tmp_path / "run", tmp_path / "export"
  for i, batch_size in enumerate((256, 512)):  # a typo on one worker used to hang both
    cluster.start("worker", i, train_args(tiny_data, run_dir, export_dir, "--strategy=multi_worker",
                                          "--epochs=1", f"--batch_size={batch_size}"))
  for i in range(2):
    try:
      code = cluster.processes[f"worker{i}"].wait(timeout=120)
    except subprocess.TimeoutExpired:
      pytest.fail(f"worker{i} still running:\n{cluster.log(f'worker{i}')}")
    assert code == 1, cluster.log(f"worker{i}")
    assert cluster.log(f"worker{i}").strip().splitlines()[-1] == (
        "error: the workers of the cluster were given different settings "
        "(train_config.batch_size): start every worker with the same flags and data")
  assert not (run_dir / "config.json").exists()


def connects(port):
  """Whether something accepts TCP connections on 127.0.0.1:port."""
  with socket.socket() as s:
    s.settimeout(1)
    return s.connect_ex(("127.0.0.1", port)) == 0


def test_server_refuses_to_start_without_acknowledging_that_it_listens_on_every_interface(
    cluster_factory):
  (port,) = free_ports(1)
  cluster = cluster_factory({"chief": ["127.0.0.1:1"], "ps": [f"127.0.0.1:{port}"]})
  process = cluster.start("ps", 0, ["server"])
  deadline = time.time() + 90
  while process.poll() is None and time.time() < deadline:
    assert not connects(port), f"the server listens on port {port}:\n{cluster.log('ps0')}"
    time.sleep(0.2)
  assert process.poll() == 1, cluster.log("ps0")
  assert not connects(port)
  lines = cluster.log("ps0").strip().splitlines()  # TensorFlow's start-up lines, then ours
  assert "Traceback" not in cluster.log("ps0"), lines
  assert [line for line in lines if line.startswith("error:")] == lines[-1:], lines
  assert re.fullmatch(
      rf"error: --listen_on_all_interfaces is not set: TensorFlow's gRPC server listens on "
      rf"0\.0\.0\.0:{port} .*whatever host TF_CONFIG names \(127\.0\.0\.1\).* runs any graph "
      rf"sent to it, without authentication.*docs/distributed\.md.*", lines[-1]), lines[-1]


def test_server_with_the_flag_warns_once_that_it_listens_on_every_interface(cluster_factory):
  (port,) = free_ports(1)
  cluster = cluster_factory({"chief": ["127.0.0.1:1"], "ps": [f"127.0.0.1:{port}"]})
  process = cluster.start("ps", 0, ["server", "--listen_on_all_interfaces"])
  deadline = time.time() + 90
  while not connects(port) and process.poll() is None and time.time() < deadline:
    time.sleep(0.2)
  assert process.poll() is None and connects(port), cluster.log("ps0")
  warnings = [line for line in cluster.log("ps0").splitlines() if "0.0.0.0" in line]
  assert len(warnings) == 1 and warnings[0].startswith("W"), cluster.log("ps0")
  assert re.search(rf"listens on 0\.0\.0\.0:{port} .*127\.0\.0\.1.*without authentication",
                   warnings[0]), warnings[0]


def test_server_refuses_a_host_that_is_not_this_machine(cluster_factory):
  (port,) = free_ports(1)
  cluster = cluster_factory({"chief": ["127.0.0.1:1"], "ps": [f"192.0.2.1:{port}"]})
  process = cluster.start("ps", 0, ["server", "--listen_on_all_interfaces"])
  try:
    code = process.wait(timeout=90)
  except subprocess.TimeoutExpired:
    pytest.fail(f"the server started for another machine's address:\n{cluster.log('ps0')}")
  assert code == 1
  last = cluster.log("ps0").strip().splitlines()[-1]
  assert re.fullmatch(rf"error: TF_CONFIG names 192\.0\.2\.1:{port} for task ps 0, but "
                      r"192\.0\.2\.1 is not an address of this machine.*", last), last
  assert not connects(port)
