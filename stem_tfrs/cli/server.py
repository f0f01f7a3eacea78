"""`python main.py server`: a worker or parameter server of a parameter-server cluster.

    TF_CONFIG='{"cluster": {...}, "task": {"type": "ps", "index": 0}}' \
        python main.py server --listen_on_all_interfaces

Runs TensorFlow's gRPC server for the task TF_CONFIG names until the process is
stopped; the chief (`python main.py train --strategy=parameter_server`) sends
it variables and work. TensorFlow's gRPC server listens on every interface
whatever host TF_CONFIG names, and runs any graph sent to it without
authentication: `server` refuses to start without --listen_on_all_interfaces,
which says the port is kept on a private network. See docs/distributed.md.
"""

from __future__ import annotations

from typing import List

from stem_tfrs.training import distributed
from stem_tfrs.cli.cluster import LISTEN_ON_ALL_INTERFACES
from stem_tfrs.cli.errors import one_line_errors


@one_line_errors
def run(argv: List[str]) -> int:
  del argv
  distributed.run_server(listen_on_all_interfaces=LISTEN_ON_ALL_INTERFACES.value)
  return 0
