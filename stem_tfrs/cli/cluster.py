"""The flag every command that starts TensorFlow's gRPC server needs: `server`, and `train`
with --strategy=multi_worker or parameter_server (see stem_tfrs.training.distributed.run_server)."""

from absl import flags

LISTEN_ON_ALL_INTERFACES = flags.DEFINE_bool(
    "listen_on_all_interfaces", False,
    "server, and train with a cluster --strategy: start although TensorFlow's gRPC server "
    "listens on 0.0.0.0:PORT (every interface), whatever host TF_CONFIG names, and runs any "
    "graph sent to it without authentication; keep the port on a private network "
    "(docs/distributed.md).")
