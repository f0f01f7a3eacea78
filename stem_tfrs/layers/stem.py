"""The STEM layer: task-specific and shared experts behind All-Forward, Task-specific-Backward gates."""

from __future__ import annotations

from typing import List, Sequence

import tensorflow as tf

from stem_tfrs.layers.gated_experts import GatedTaskExperts


@tf.keras.utils.register_keras_serializable(package="stem_tfrs")
class STEMLayer(GatedTaskExperts):
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
    kernel_initializer: Initializer of the experts' and gates' kernels (per
      expert, as `ExpertGroup` takes it).

  Input: list of T+1 tensors [B, d] (task inputs in task order, shared last).
  Output: list of T tensors [B, H] (+ h_S last if `output_shared`).
  """

  def __init__(self, task_names: Sequence[str], num_shared_experts: int,
               num_specific_experts: int, expert_hidden_units: Sequence[int],
               gate_hidden_units: Sequence[int] = (), dropout: float = 0.0,
               batch_norm: bool = False, output_shared: bool = True, aftb: bool = True,
               kernel_initializer="glorot_uniform", **kwargs):
    super().__init__(task_names, num_shared_experts, num_specific_experts,
                     expert_hidden_units, gate_hidden_units, dropout=dropout,
                     batch_norm=batch_norm, output_shared=output_shared,
                     kernel_initializer=kernel_initializer, **kwargs)
    self.aftb = bool(aftb)

  @property
  def num_candidates(self) -> int:
    """N, the number of experts every gate mixes."""
    return self.num_experts

  @property
  def task_gate_width(self) -> int:
    return self.num_experts

  def task_gate_input(self, task_input: tf.Tensor, shared_input: tf.Tensor) -> tf.Tensor:
    return task_input + shared_input

  def task_candidates(self, t: int, task_outputs: List[List[tf.Tensor]],
                      shared_outputs: List[List[tf.Tensor]]) -> List[List[tf.Tensor]]:
    """Every expert; other tasks' behind tf.stop_gradient (with `aftb`)."""
    return [[tf.stop_gradient(e) for e in group] if self.aftb and j != t else group
            for j, group in enumerate(task_outputs)] + shared_outputs

  def candidate_owners(self, t: int) -> List[str]:
    return ([task for task in self.task_names for _ in range(self.num_specific_experts)]
            + ["shared"] * self.num_shared_experts)

  def get_config(self):
    config = super().get_config()
    config.update(aftb=self.aftb)
    return config
