"""The functional train step: split the model and optimizer once, jit a pure function of their state.

`nnx.jit` walks the Python object graph on every call; here the graph is split once, the state is
a pytree, and `jax.jit` donates it so the update happens in place. Data parallelism is a 1-D
mesh over every device: the batch is sharded on axis 'data', the state is replicated, and XLA
inserts the gradient (and BatchNorm statistics) all-reduces, so the step computes the same
thing on one device or many.
"""

from __future__ import annotations

import dataclasses
from collections.abc import Callable
from typing import Any

import jax
import jax.numpy as jnp
import numpy as np
import optax
from flax import nnx

from tinycats.sharding import batch_sharding, replicated

# A task's loss: (model, batch, rng key) -> (scalar float32 loss, dict of float32 scalar metrics).
LossFn = Callable[[nnx.Module, dict, jax.Array], tuple[jax.Array, dict]]


def learning_rate_schedule(train_config, steps_per_epoch: int, total_steps: int) -> optax.Schedule:
  """Linear warmup to `learning_rate`, then cosine decay to zero at `total_steps`."""
  warmup = min(int(round(train_config.warmup_epochs * steps_per_epoch)), max(total_steps - 1, 0))
  return optax.warmup_cosine_decay_schedule(0.0, train_config.learning_rate, warmup, max(total_steps, warmup + 1))


def all_backbone(params):
  """The parameter groups of a network without a separate head: every parameter is 'backbone'."""
  return jax.tree.map(lambda _: 'backbone', params)


def make_optimizer(
  train_config,
  schedule: optax.Schedule,
  steps_per_epoch: int = 1,
  fine_tuning: bool = True,
  param_groups: Callable[[Any], Any] = all_backbone,
) -> optax.GradientTransformation:
  """AdamW behind global-norm clipping; when fine-tuning, the backbone's rate is scaled and zero while frozen.

  `param_groups(params)` labels each parameter 'head' or 'backbone' (the task's hook: the
  classifier's `fc` is its head).

  From scratch (`fine_tuning=False`) a random backbone must learn at the full rate, so the scale
  and the freeze do not apply. Weight decay skips biases and norm scales (ndim < 2). The
  structure does not depend on the scale or the freeze, so either may change when a run resumes.
  """
  freeze_steps = int(round(train_config.freeze_epochs * steps_per_epoch)) if fine_tuning else 0
  scale = train_config.backbone_lr_scale if fine_tuning else 1.0
  backbone_schedule = lambda step: jnp.where(step < freeze_steps, 0.0, scale * schedule(step))
  adamw = lambda lr: optax.adamw(
    lr,
    b2=train_config.get('beta2', 0.999),
    weight_decay=train_config.weight_decay,
    mask=lambda params: jax.tree.map(lambda p: p.ndim > 1, params),
  )
  parts = [optax.clip_by_global_norm(train_config.grad_clip)] if train_config.grad_clip > 0 else []
  parts.append(optax.multi_transform({'head': adamw(schedule), 'backbone': adamw(backbone_schedule)}, param_groups))
  return optax.chain(*parts)


@dataclasses.dataclass
class TrainStep:
  """Holds the graph definition; `__call__(state, batch, rng, step[, resident])` is the jitted, donated update.

  `wrt` picks the variables that learn (the optimizer's filter); `after_update(model, step)`
  runs after each update inside the same jit (the generator's EMA); `grad_accum` > 1 splits the
  batch into that many micro-batches, run one after another with their gradients averaged, so a
  batch too big for the device's memory gives the same update as in one piece.

  `resident`, when given, is the training split already on the devices ({'image', 'size', 'label'},
  replicated): the batch is then {'index'}, the rows to take from it, and each device gathers its
  share inside the step (`feed.Feed` chooses which).
  """

  graphdef: Any
  loss_fn: LossFn
  mesh: jax.sharding.Mesh
  wrt: Any = nnx.Param
  after_update: Callable[[nnx.Module, jax.Array], None] | None = None
  grad_accum: int = 1

  def __post_init__(self):
    everywhere = replicated(self.mesh)
    self._step = jax.jit(
      self._update,
      donate_argnums=0,
      in_shardings=(everywhere, batch_sharding(self.mesh), everywhere, everywhere, everywhere),
      out_shardings=(everywhere, everywhere),
    )

  def _grads(self, model, batch, key):
    """((loss, metrics), grads), averaged over `grad_accum` micro-batches."""
    grad_fn = nnx.value_and_grad(self.loss_fn, argnums=nnx.DiffState(0, self.wrt), has_aux=True)
    k = self.grad_accum
    if k == 1:
      return grad_fn(model, batch, key)
    # Micro-batch j takes rows j, j+k, j+2k, ...: every device keeps its share of each one.
    micro = jax.tree.map(lambda x: jnp.swapaxes(x.reshape(x.shape[0] // k, k, *x.shape[1:]), 0, 1), batch)
    graphdef, state = nnx.split(model)

    def one(state, chunk, key):
      model = nnx.merge(graphdef, state)
      out = grad_fn(model, chunk, key)
      return nnx.state(model), out  # The model's state carries BatchNorm statistics on.

    def accumulate(carry, inputs):
      state, total = carry
      index, chunk = inputs
      state, out = one(state, chunk, jax.random.fold_in(key, index))
      return (state, jax.tree.map(lambda a, b: a + b / k, total, out)), None

    # Zeros of the output's shape, so the scan traces the step once (not once more for a first micro-batch).
    shapes = jax.eval_shape(one, state, jax.tree.map(lambda x: x[0], micro), key)[1]
    zeros = jax.tree.map(lambda s: jnp.zeros(s.shape, s.dtype), shapes)
    (state, total), _ = jax.lax.scan(accumulate, (state, zeros), (jnp.arange(k), micro))
    nnx.update(model, state)
    return total

  def _update(self, state, batch, rng, step, resident):
    if resident is not None:  # Rows of the resident split; each device gathers its share of the batch.
      batch = jax.tree.map(lambda field: field[batch['index']], resident)
    key = jax.random.fold_in(rng, step)  # Every step's randomness follows from (run key, step).
    model, optimizer = nnx.merge(self.graphdef, state)
    model.train()
    (loss, metrics), grads = self._grads(model, batch, key)
    optimizer.update(model, grads)
    if self.after_update is not None:
      self.after_update(model, step)
    metrics = dict(metrics, loss=loss, grad_norm=optax.tree.norm(grads))
    return nnx.state((model, optimizer)), metrics

  def __call__(self, state, batch, rng, step: int, resident=None):
    return self._step(state, batch, rng, np.int32(step), resident)

  def lower(self, state, batch, rng, step: int = 0, resident=None):
    """The step lowered for these inputs: `.compile()` it to time compilation or read XLA's cost analysis."""
    return self._step.lower(state, batch, rng, np.int32(step), resident)


def for_task(task, graphdef, mesh) -> TrainStep:
  """The train step a task's config asks for: its loss, trainable filter, after-update hook, accumulation."""
  return TrainStep(
    graphdef,
    task.loss,
    mesh,
    wrt=task.trainable,
    after_update=task.after_update,
    grad_accum=task.config.train.get('grad_accum', 1),
  )
