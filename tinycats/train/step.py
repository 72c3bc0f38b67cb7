"""The functional train step: split the model and optimizer once, jit a pure function of their state.

`nnx.jit` walks the Python object graph on every call; here the graph is split once, the state is
a pytree, and `jax.jit` donates it so the update happens in place. Data parallelism is a 1-D
mesh over every device: the batch is sharded on axis 'data', the state is replicated, and XLA
inserts the gradient (and BatchNorm statistics) all-reduces, so the step computes the same
thing on one device or many.
"""
from __future__ import annotations

import dataclasses
from typing import Any, Callable

import jax
import jax.numpy as jnp
import numpy as np
import optax
from flax import nnx
from jax.sharding import NamedSharding, PartitionSpec as P

# A task's loss: (model, batch, rng key) -> (scalar float32 loss, dict of float32 scalar metrics).
LossFn = Callable[[nnx.Module, dict, jax.Array], tuple[jax.Array, dict]]


def make_mesh(devices=None) -> jax.sharding.Mesh:
  devices = np.asarray(devices if devices is not None else jax.devices())
  return jax.sharding.Mesh(devices, ('data',))


def batch_sharding(mesh) -> NamedSharding:
  return NamedSharding(mesh, P('data'))


def replicated(mesh) -> NamedSharding:
  return NamedSharding(mesh, P())


def learning_rate_schedule(train_config, steps_per_epoch: int, total_steps: int) -> optax.Schedule:
  """Linear warmup to `learning_rate`, then cosine decay to zero at `total_steps`."""
  warmup = min(int(round(train_config.warmup_epochs * steps_per_epoch)), max(total_steps - 1, 0))
  return optax.warmup_cosine_decay_schedule(0.0, train_config.learning_rate, warmup, max(total_steps, warmup + 1))


def _head_or_backbone(params):
  """'head' for the classification layer (`fc`), 'backbone' for everything else."""
  first_key = lambda path: getattr(path[0], 'key', getattr(path[0], 'name', None))
  return jax.tree_util.tree_map_with_path(lambda path, _: 'head' if first_key(path) == 'fc' else 'backbone', params)


def make_optimizer(train_config, schedule: optax.Schedule, steps_per_epoch: int = 1,
                   fine_tuning: bool = True) -> optax.GradientTransformation:
  """AdamW behind global-norm clipping; when fine-tuning, the backbone's rate is scaled and zero while frozen.

  From scratch (`fine_tuning=False`) a random backbone must learn at the full rate, so the scale
  and the freeze do not apply. Weight decay skips biases and norm scales (ndim < 2). The
  structure does not depend on the scale or the freeze, so either may change when a run resumes.
  """
  freeze_steps = int(round(train_config.freeze_epochs * steps_per_epoch)) if fine_tuning else 0
  scale = train_config.backbone_lr_scale if fine_tuning else 1.0
  backbone_schedule = lambda step: jnp.where(step < freeze_steps, 0.0, scale * schedule(step))
  adamw = lambda lr: optax.adamw(lr, weight_decay=train_config.weight_decay,
                                 mask=lambda params: jax.tree.map(lambda p: p.ndim > 1, params))
  parts = [optax.clip_by_global_norm(train_config.grad_clip)] if train_config.grad_clip > 0 else []
  parts.append(optax.multi_transform({'head': adamw(schedule), 'backbone': adamw(backbone_schedule)},
                                     _head_or_backbone))
  return optax.chain(*parts)


@dataclasses.dataclass
class TrainStep:
  """Holds the graph definition; `__call__(state, batch, rng, step)` is the jitted, donated update."""
  graphdef: Any
  loss_fn: LossFn
  mesh: jax.sharding.Mesh

  def __post_init__(self):
    state_sharding = replicated(self.mesh)
    self._step = jax.jit(self._update, donate_argnums=0,
                         in_shardings=(state_sharding, batch_sharding(self.mesh), state_sharding, state_sharding),
                         out_shardings=(state_sharding, state_sharding))

  def _update(self, state, batch, rng, step):
    key = jax.random.fold_in(rng, step)  # Every step's randomness follows from (run key, step).
    model, optimizer = nnx.merge(self.graphdef, state)
    model.train()
    (loss, metrics), grads = nnx.value_and_grad(self.loss_fn, has_aux=True)(model, batch, key)
    optimizer.update(model, grads)
    metrics = dict(metrics, loss=loss, grad_norm=optax.tree.norm(grads))
    return nnx.state((model, optimizer)), metrics

  def __call__(self, state, batch, rng, step: int):
    return self._step(state, batch, rng, np.int32(step))


def shard_batch(batch: dict[str, np.ndarray], mesh) -> dict[str, jax.Array]:
  """Host arrays -> one global array per field, split over the mesh's 'data' axis."""
  sharding = batch_sharding(mesh)
  return {k: jax.device_put(v, sharding) for k, v in batch.items()}

