"""stem_tfrs.errors: what a command prints of a TensorFlow error, on one line."""

from stem_tfrs.errors import first_line

PEER_LOST = """Graph execution error:

Detected at node while/CollectiveReduceV2 defined at (most recent call last):
  File "main.py", line 29, in <module>

  File "confusion_metrics.py", line 1604, in result

Collective ops is aborted by: recvmsg:Connection reset by peer
Additional GRPC error information from remote target /job:worker/replica:0/task:1 while calling \
/tensorflow.WorkerService/RecvBuf:
The error could be from a previous operation. Restart your program to reset."""

SHAPES_DIFFER = """Exception encountered when calling layer 'stem_layer_0' (type STEMLayer).

{{function_node __wrapped__CollectiveBcastRecv_device_/job:worker/replica:0/task:1/device:CPU:0}} \
Collective ops is aborted by: Shape mismatch in the collective instance 116: expected shape \
[1,32,32] but another member in the group expected shape [1,32,16]. [Op:CollectiveBcastRecv]

Call arguments received by layer 'stem_layer_0' (type STEMLayer):
  \u2022 training=False"""


def test_a_lost_peer_is_named_with_the_cause():
  assert first_line(PEER_LOST) == ("Collective ops is aborted by: recvmsg:Connection reset by "
                                   "peer (from /job:worker/replica:0/task:1)")


def test_workers_that_disagree_say_on_what():
  assert first_line(SHAPES_DIFFER) == (
      "Collective ops is aborted by: Shape mismatch in the collective instance 116: expected "
      "shape [1,32,32] but another member in the group expected shape [1,32,16].")


def test_headers_and_traceback_lines_are_skipped_and_assertions_keep_their_values():
  message = "Graph execution error:\n\nDetected at node x defined at:\n  File \"a.py\", line 1\n" \
            "indices[3] = 7 is not in [0, 5)"
  assert first_line(message) == "indices[3] = 7 is not in [0, 5)"
  assert first_line("assertion failed: [label like must be 0 or 1] [2 0 1]") == (
      "label like must be 0 or 1 2 0 1")
