"""What STEM and CGC (PLE) layers share: task and shared experts, a gate per task, a shared gate."""

from __future__ import annotations

from typing import Dict, List, Optional, Sequence, Tuple, Union

import tensorflow as tf

from stem_tfrs.layers.mlp import MLP, ExpertGroup


def gate_softmax(logits: tf.Tensor) -> tf.Tensor:
  """The softmax of gate logits over their last axis, written out: [B, N] -> [B, N].

      exp(l - max(l)) / sum(exp(l - max(l)))

  Not `tf.nn.softmax`: with TensorFlow's oneDNN optimizations (on by default
  on x86 CPUs) that becomes `_MklSoftmax`, which hands its few hundred numbers
  to the thread pool the experts' products keep busy and waits there; written
  out, the exports serve small batches faster and large ones as fast
  (`benchmarks/serving.py`). Half-precision logits are exponentiated
  and summed in float32, and the weights cast back. The max is only there
  against overflow and the softmax does not depend on it, so no gradient
  flows through it.
  """
  x = tf.cast(logits, tf.float32) if logits.dtype in (tf.bfloat16, tf.float16) else logits
  e = tf.exp(x - tf.stop_gradient(tf.reduce_max(x, axis=-1, keepdims=True)))
  return tf.cast(e / tf.reduce_sum(e, axis=-1, keepdims=True), logits.dtype)


def mix(weights: tf.Tensor, candidates: Sequence[Union[tf.Tensor, Sequence[tf.Tensor]]]
        ) -> tf.Tensor:
  """sum_k weights[:, k] * c_k over N candidates c_k [B, H]: [B, N] -> [B, H].

  `candidates` holds the experts in groups, in gate order: a group is a list
  of k [B, H] tensors, or one [B, k, H] tensor. A list is mixed expert by
  expert (N scaled copies summed by one add_n), a stacked group as one
  batched product [B, 1, k] x [B, k, H]. The layers pass lists: forward and
  backward, the list's scaled copies ran faster than the stack and batched
  product, and than an einsum over the stack, in the training step that
  `benchmarks/train_throughput.py` times.
  """
  parts, start = [], 0
  for group in candidates:
    if isinstance(group, (list, tuple)):                          # k x [B, H]
      parts.extend(weights[:, start + j:start + j + 1] * expert for j, expert in enumerate(group))
      start += len(group)
      continue
    k = group.shape[1]                                            # [B, k, H]
    if k == 1:
      parts.append(weights[:, start:start + 1] * group[:, 0])
    else:
      part = tf.matmul(weights[:, None, start:start + k], group)  # [B, 1, H]
      parts.append(tf.squeeze(part, axis=1))
    start += k
  return tf.add_n(parts) if len(parts) > 1 else parts[0]


class GatedTaskExperts(tf.keras.layers.Layer):
  """Base layer: K_s experts per task, K_h shared experts, one softmax gate per task.

  Task t's experts (`expert_<task>`) read x_t, the shared experts
  (`expert_shared`) read x_S. Task t's gate (`gate_<task>`) reads
  `task_gate_input(x_t, x_S)` and mixes `task_candidates(t, ...)`; subclasses
  define both. The shared gate (`gate_shared`, only with `output_shared`)
  reads x_S and mixes every expert, with no stop_gradient, for a next layer.

  Args:
    task_names: The T tasks.
    num_shared_experts: K_h (may be 0).
    num_specific_experts: K_s (>= 1).
    expert_hidden_units: Expert MLP widths; outputs have width H = the last one.
    gate_hidden_units: Gate MLP hidden widths before the softmax layer.
    dropout: Dropout rate in experts and gates.
    batch_norm: Batch normalization in experts and gates.
    output_shared: Also compute h_S (needed if another layer follows).
    kernel_initializer: Initializer of the experts' and gates' kernels (per
      expert, as `ExpertGroup` takes it).

  Input: list of T+1 tensors [B, d] (task inputs in task order, shared last).
  Output: list of T tensors [B, H] (+ h_S last if `output_shared`).
  """

  def __init__(self, task_names: Sequence[str], num_shared_experts: int,
               num_specific_experts: int, expert_hidden_units: Sequence[int],
               gate_hidden_units: Sequence[int] = (), dropout: float = 0.0,
               batch_norm: bool = False, output_shared: bool = True,
               kernel_initializer="glorot_uniform", **kwargs):
    super().__init__(**kwargs)
    if not task_names:
      raise ValueError(f"{type(self).__name__} needs at least one task")
    if num_specific_experts < 1:
      raise ValueError(f"num_specific_experts must be >= 1, got {num_specific_experts}")
    if num_shared_experts < 0:
      raise ValueError(f"num_shared_experts must be >= 0, got {num_shared_experts}")
    self.task_names = list(task_names)
    self.num_shared_experts = int(num_shared_experts)
    self.num_specific_experts = int(num_specific_experts)
    self.expert_hidden_units = [int(u) for u in expert_hidden_units]
    self.gate_hidden_units = [int(u) for u in gate_hidden_units]
    self.dropout = float(dropout)
    self.batch_norm = bool(batch_norm)
    self.output_shared = bool(output_shared)
    self.kernel_initializer = tf.keras.initializers.get(kernel_initializer)

  @property
  def num_experts(self) -> int:
    """All experts of the layer: T * K_s + K_h."""
    return len(self.task_names) * self.num_specific_experts + self.num_shared_experts

  @property
  def task_gate_width(self) -> int:
    """How many experts a task gate mixes."""
    raise NotImplementedError

  def task_gate_input(self, task_input: tf.Tensor, shared_input: tf.Tensor) -> tf.Tensor:
    raise NotImplementedError

  def task_candidates(self, t: int, task_outputs: List[List[tf.Tensor]],
                      shared_outputs: List[List[tf.Tensor]]) -> List[List[tf.Tensor]]:
    """The groups of expert outputs (each a list of [B, H]) task t's gate mixes, in gate order."""
    raise NotImplementedError

  def candidate_owners(self, t: int) -> List[str]:
    """Who owns each expert task t's gate mixes (a task name or "shared"), in gate order."""
    raise NotImplementedError

  def build(self, input_shape):
    if len(input_shape) != len(self.task_names) + 1:
      raise ValueError(
          f"{type(self).__name__} over {len(self.task_names)} tasks takes "
          f"{len(self.task_names) + 1} inputs (tasks, then shared), got {len(input_shape)}")
    expert = dict(hidden_units=self.expert_hidden_units, dropout=self.dropout,
                  batch_norm=self.batch_norm, kernel_initializer=self.kernel_initializer)
    gate = dict(hidden_units=self.gate_hidden_units, dropout=self.dropout,
                batch_norm=self.batch_norm, kernel_initializer=self.kernel_initializer)
    self.task_experts = [ExpertGroup(self.num_specific_experts, name=f"expert_{t}", **expert)
                         for t in self.task_names]
    self.shared_experts = (ExpertGroup(self.num_shared_experts, name="expert_shared", **expert)
                           if self.num_shared_experts else None)
    self.task_gates = [MLP(output_units=self.task_gate_width, name=f"gate_{t}", **gate)
                       for t in self.task_names]
    self.shared_gate = (MLP(output_units=self.num_experts, name="gate_shared", **gate)
                        if self.output_shared else None)
    super().build(input_shape)

  def call(self, inputs: Sequence[tf.Tensor], training: Optional[bool] = None,
           return_gates: bool = False):
    """Returns the T (+1) mixed outputs; with `return_gates`, also the gates.

    The gates come as a list of [B, width] softmax weights in output order.
    """
    task_inputs, shared_input = list(inputs[:-1]), inputs[-1]
    task_outputs = [experts(x, training=training, stacked=False)    # T x K_s x [B, H]
                    for experts, x in zip(self.task_experts, task_inputs)]
    shared_outputs = ([self.shared_experts(shared_input, training=training, stacked=False)]
                      if self.shared_experts is not None else [])   # K_h x [B, H]
    outputs, gates = [], []
    for t, (gate, x_t) in enumerate(zip(self.task_gates, task_inputs)):
      weights = gate_softmax(gate(self.task_gate_input(x_t, shared_input), training=training))
      outputs.append(mix(weights, self.task_candidates(t, task_outputs, shared_outputs)))
      gates.append(weights)
    if self.output_shared:
      weights = gate_softmax(self.shared_gate(shared_input, training=training))
      outputs.append(mix(weights, task_outputs + shared_outputs))
      gates.append(weights)
    return (outputs, gates) if return_gates else outputs

  def gates_with_owners(self, inputs: Sequence[tf.Tensor]
                        ) -> Dict[str, Tuple[tf.Tensor, List[str]]]:
    """{task: (gate weights [B, width], owner of each weight)} for `inputs`."""
    _, gates = self(inputs, return_gates=True)
    return {task: (gates[t], self.candidate_owners(t)) for t, task in enumerate(self.task_names)}

  def get_config(self):
    config = super().get_config()
    config.update(
        task_names=self.task_names, num_shared_experts=self.num_shared_experts,
        num_specific_experts=self.num_specific_experts,
        expert_hidden_units=self.expert_hidden_units,
        gate_hidden_units=self.gate_hidden_units, dropout=self.dropout,
        batch_norm=self.batch_norm, output_shared=self.output_shared,
        kernel_initializer=tf.keras.initializers.serialize(self.kernel_initializer))
    return config
