"""The STEM layer: task-specific and shared experts behind All-Forward, Task-specific-Backward gates."""

from __future__ import annotations

from typing import List, Optional, Sequence

import tensorflow as tf

from stem_tfrs.layers.mlp import MLP, ExpertGroup
from stem_tfrs.layers.moe import mix


@tf.keras.utils.register_keras_serializable(package="stem_tfrs")
class STEMLayer(tf.keras.layers.Layer):
  """One STEM-Net layer (Su et al., "STEM: Unleashing the Power of Embeddings
  for Multi-task Recommendation", AAAI 2024, arXiv:2308.13537).

  Inputs are T task-specific representations x_1..x_T and a shared one x_S.
  Task t has K_s experts that read x_t; K_h shared experts read x_S:

      e_{t,k} = Expert_{t,k}(x_t)        s_k = Expert_k(x_S)

  Every gate mixes the same N = T*K_s + K_h candidates
  [e_{1,1..K_s}, ..., e_{T,1..K_s}, s_{1..K_h}]. Task t's gate reads the sum
  of its own and the shared input, and sees every expert in the forward pass,
  but the experts of every other task j != t enter it through
  `tf.stop_gradient` (All Forward, Task-specific Backward):

      g_t = softmax(Gate_t(x_t + x_S))                       [B, N]
      h_t = sum_k g_t[k] * c_k,  c_k = stop_gradient(e_{j,.})  for j != t
                                  c_k = e_{t,.} or s_.          otherwise

  so task t's loss never reaches task j's experts or their inputs. The shared
  gate, used only to feed a next layer, mixes all experts with no
  stop_gradient: h_S = sum_k softmax(Gate_S(x_S))[k] * c_k. Set
  `output_shared=False` in the last layer to skip it. (In stacked layers the
  next layer's shared experts read h_S, so there task t's loss does reach the
  earlier layer's task-j experts through h_S, as in the authors' model.)

  Example:

      layer = STEMLayer(["finish", "like"], num_shared_experts=8,
                        num_specific_experts=1,
                        expert_hidden_units=[512, 512, 512],
                        gate_hidden_units=[128, 64], output_shared=False)
      h_finish, h_like = layer([x_finish, x_like, x_shared])

  Args:
    task_names: The T task names (they name the sub-layers and variables:
      `expert_<task>`, `gate_<task>`, `expert_shared`, `gate_shared`).
    num_shared_experts: K_h (may be 0).
    num_specific_experts: K_s (>= 1).
    expert_hidden_units: Expert MLP widths; outputs have width H = last one.
    gate_hidden_units: Gate MLP hidden widths before the N-way softmax.
    dropout: Dropout rate in experts and gates.
    batch_norm: Batch normalization in experts and gates.
    output_shared: Also compute h_S (needed if another layer follows).
    aftb: True (STEM): other tasks' experts pass through tf.stop_gradient into
      task t's gate. False gives the ME-MMoE baseline's layer: the same
      experts and gates, all forward and all backward.

  Input: list of T+1 tensors [B, d] (task inputs in task order, shared last).
  Output: list of T tensors [B, H] (+ h_S last if `output_shared`).
  """

  def __init__(self, task_names: Sequence[str], num_shared_experts: int,
               num_specific_experts: int, expert_hidden_units: Sequence[int],
               gate_hidden_units: Sequence[int] = (), dropout: float = 0.0,
               batch_norm: bool = False, output_shared: bool = True, aftb: bool = True,
               **kwargs):
    super().__init__(**kwargs)
    if not task_names:
      raise ValueError("STEMLayer needs at least one task")
    if num_specific_experts < 1:
      raise ValueError(
          f"num_specific_experts must be >= 1, got {num_specific_experts}")
    if num_shared_experts < 0:
      raise ValueError(
          f"num_shared_experts must be >= 0, got {num_shared_experts}")
    self.task_names = list(task_names)
    self.num_shared_experts = int(num_shared_experts)
    self.num_specific_experts = int(num_specific_experts)
    self.expert_hidden_units = [int(u) for u in expert_hidden_units]
    self.gate_hidden_units = [int(u) for u in gate_hidden_units]
    self.dropout = float(dropout)
    self.batch_norm = bool(batch_norm)
    self.output_shared = bool(output_shared)
    self.aftb = bool(aftb)

  @property
  def num_candidates(self) -> int:
    """N, the number of experts every gate mixes."""
    return len(self.task_names) * self.num_specific_experts + self.num_shared_experts

  def build(self, input_shape):
    if len(input_shape) != len(self.task_names) + 1:
      raise ValueError(
          f"STEMLayer over {len(self.task_names)} tasks takes "
          f"{len(self.task_names) + 1} inputs (tasks, then shared), got "
          f"{len(input_shape)}")
    expert = dict(hidden_units=self.expert_hidden_units, dropout=self.dropout,
                  batch_norm=self.batch_norm)
    gate = dict(hidden_units=self.gate_hidden_units, output_units=self.num_candidates,
                dropout=self.dropout, batch_norm=self.batch_norm)
    self.task_experts = [ExpertGroup(self.num_specific_experts, name=f"expert_{t}", **expert)
                         for t in self.task_names]
    self.shared_experts = (ExpertGroup(self.num_shared_experts, name="expert_shared", **expert)
                           if self.num_shared_experts else None)
    self.task_gates = [MLP(name=f"gate_{t}", **gate) for t in self.task_names]
    self.shared_gate = MLP(name="gate_shared", **gate) if self.output_shared else None
    super().build(input_shape)

  def call(self, inputs: Sequence[tf.Tensor], training: Optional[bool] = None,
           return_gates: bool = False):
    """Returns the T (+1) mixed outputs; with `return_gates`, also the gates.

    The gates come as a list of [B, N] softmax weights in output order.
    """
    task_inputs, shared_input = list(inputs[:-1]), inputs[-1]
    task_outputs = [experts(x, training=training)               # T x [B, K_s, H]
                    for experts, x in zip(self.task_experts, task_inputs)]
    shared_outputs = ([self.shared_experts(shared_input, training=training)]
                      if self.shared_experts is not None else [])  # [B, K_h, H]

    outputs, gates = [], []
    for t, (gate, x_t) in enumerate(zip(self.task_gates, task_inputs)):
      candidates = [tf.stop_gradient(out) if self.aftb and j != t else out
                    for j, out in enumerate(task_outputs)] + shared_outputs
      weights = tf.nn.softmax(gate(x_t + shared_input, training=training))
      outputs.append(mix(weights, candidates))
      gates.append(weights)
    if self.output_shared:
      weights = tf.nn.softmax(self.shared_gate(shared_input, training=training))
      outputs.append(mix(weights, task_outputs + shared_outputs))
      gates.append(weights)
    return (outputs, gates) if return_gates else outputs

  def get_config(self):
    config = super().get_config()
    config.update(
        task_names=self.task_names, num_shared_experts=self.num_shared_experts,
        num_specific_experts=self.num_specific_experts,
        expert_hidden_units=self.expert_hidden_units,
        gate_hidden_units=self.gate_hidden_units, dropout=self.dropout,
        batch_norm=self.batch_norm, output_shared=self.output_shared, aftb=self.aftb)
    return config

