"""Mixture-of-experts layers of the baselines: MMoE / OMoE and CGC (one PLE level)."""

from __future__ import annotations

from typing import List, Optional, Sequence

import tensorflow as tf

from stem_tfrs.layers.gated_experts import GatedTaskExperts, gate_softmax, mix
from stem_tfrs.layers.mlp import MLP, ExpertGroup


@tf.keras.utils.register_keras_serializable(package="stem_tfrs")
class MMoELayer(tf.keras.layers.Layer):
  """Multi-gate Mixture-of-Experts (Ma et al., KDD 2018), or OMoE with one gate.

  K shared experts read the input x; task t's gate mixes them:

      h_t = sum_k softmax(Gate_t(x))[k] * Expert_k(x)

  With `one_gate=True` (OMoE) a single gate serves every task, so every task
  gets the same mixture.

  Args:
    task_names: The T tasks (they name the gates: `gate_<task>`).
    num_experts: K (experts are named `expert_shared`).
    expert_hidden_units: Expert widths; outputs have width H = the last one.
    gate_hidden_units: Gate hidden widths before the K-way softmax.
    dropout, batch_norm: As in `MLP`, for experts and gates.
    one_gate: OMoE: one gate (`gate_shared`) for all tasks.
    kernel_initializer: Initializer of the experts' and gates' kernels (per
      expert, as `ExpertGroup` takes it).

  Input: [B, d]. Output: list of T tensors [B, H].
  """

  def __init__(self, task_names: Sequence[str], num_experts: int,
               expert_hidden_units: Sequence[int], gate_hidden_units: Sequence[int] = (),
               dropout: float = 0.0, batch_norm: bool = False, one_gate: bool = False,
               kernel_initializer="glorot_uniform", **kwargs):
    super().__init__(**kwargs)
    if num_experts < 1:
      raise ValueError(f"num_experts must be >= 1, got {num_experts}")
    self.task_names = list(task_names)
    self.num_experts = int(num_experts)
    self.expert_hidden_units = [int(u) for u in expert_hidden_units]
    self.gate_hidden_units = [int(u) for u in gate_hidden_units]
    self.dropout, self.batch_norm, self.one_gate = float(dropout), bool(batch_norm), bool(one_gate)
    self.kernel_initializer = tf.keras.initializers.get(kernel_initializer)

  def build(self, input_shape):
    self.experts = ExpertGroup(self.num_experts, self.expert_hidden_units, dropout=self.dropout,
                               batch_norm=self.batch_norm,
                               kernel_initializer=self.kernel_initializer, name="expert_shared")
    gate = dict(hidden_units=self.gate_hidden_units, output_units=self.num_experts,
                dropout=self.dropout, batch_norm=self.batch_norm,
                kernel_initializer=self.kernel_initializer)
    names = ["shared"] if self.one_gate else self.task_names
    self.gates = [MLP(name=f"gate_{n}", **gate) for n in names]
    super().build(input_shape)

  def call(self, inputs: tf.Tensor, training: Optional[bool] = None, return_gates: bool = False):
    experts = self.experts(inputs, training=training, stacked=False)  # K x [B, H]
    weights = [gate_softmax(g(inputs, training=training)) for g in self.gates]
    if self.one_gate:
      weights = weights * len(self.task_names)
    outputs = [mix(w, [experts]) for w in weights]
    return (outputs, weights) if return_gates else outputs

  def get_config(self):
    config = super().get_config()
    config.update(task_names=self.task_names, num_experts=self.num_experts,
                  expert_hidden_units=self.expert_hidden_units,
                  gate_hidden_units=self.gate_hidden_units, dropout=self.dropout,
                  batch_norm=self.batch_norm, one_gate=self.one_gate,
                  kernel_initializer=tf.keras.initializers.serialize(self.kernel_initializer))
    return config


@tf.keras.utils.register_keras_serializable(package="stem_tfrs")
class CGCLayer(GatedTaskExperts):
  """Customized Gate Control, one extraction level of PLE (Tang et al., RecSys 2020).

  Task t has K_s experts reading its input x_t, K_h shared experts read x_S.
  Task t's gate reads x_t and mixes only its own and the shared experts:

      h_t = sum_k softmax(Gate_t(x_t))[k] * c_k,  c = [e_{t,1..K_s}, s_{1..K_h}]

  so other tasks' experts are not in its mixture at all (forward or
  backward). The shared gate, needed only by a next level, mixes every expert:
  h_S = sum_k softmax(Gate_S(x_S))[k] * c_k, c = [e_{1..T,.}, s_.].
  PLE feeds the same shared embedding as every x_t and x_S; ME-PLE feeds task
  and shared embeddings, like STEM. Arguments, inputs and outputs as in
  `GatedTaskExperts`.
  """

  @property
  def task_gate_width(self) -> int:
    return self.num_specific_experts + self.num_shared_experts

  def task_gate_input(self, task_input: tf.Tensor, shared_input: tf.Tensor) -> tf.Tensor:
    return task_input

  def task_candidates(self, t: int, task_outputs: List[List[tf.Tensor]],
                      shared_outputs: List[List[tf.Tensor]]) -> List[List[tf.Tensor]]:
    return [task_outputs[t]] + shared_outputs

  def candidate_owners(self, t: int) -> List[str]:
    return [self.task_names[t]] * self.num_specific_experts + ["shared"] * self.num_shared_experts
