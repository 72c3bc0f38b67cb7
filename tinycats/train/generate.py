"""The generation task: a class-conditional DiT trained by rectified flow, with an EMA of its weights.

The model the loop trains is `EMAModel`: the network (`net`, which the optimizer updates) and
its exponential moving average (`ema`, updated inside the jitted step after every update and
checkpointed with it). Validation, sample grids, `Generator`, evaluation and export all use
the EMA weights. The decay ramps up as min(decay, (1 + step) / (10 + step)), so the average
follows the network closely early on and a short run already has usable EMA weights.
"""
from __future__ import annotations

import functools
import os

import jax
import jax.numpy as jnp
import numpy as np
from flax import nnx

from tinycats import flow, metrics, models
from tinycats.data import augment
from tinycats.train import step as step_lib
from tinycats.train.task import Task


class EMAModel(nnx.Module):
  """The trained network and its exponential moving average (the one that is used)."""

  def __init__(self, net: nnx.Module):
    self.net = net
    self.ema = nnx.clone(net)
    # Own buffers: a donated train step may not receive one array twice.
    nnx.update(self.ema, jax.tree.map(jnp.copy, nnx.state(self.ema)))


# The optimizer updates the network; the EMA copy only moves by averaging.
TRAINABLE = nnx.All(nnx.Param, nnx.Not(nnx.PathContains('ema')))


def ema_decay(step, decay: float):
  """The decay for update number `step` (0-based): ramps from 0.1 towards `decay`."""
  step = jnp.asarray(step, jnp.float32)
  return jnp.minimum(decay, (1.0 + step) / (10.0 + step))


def update_ema(model: EMAModel, decay) -> None:
  online = nnx.state(model.net, nnx.Param)
  average = nnx.state(model.ema, nnx.Param)
  nnx.update(model.ema, jax.tree.map(lambda e, o: decay * e + (1 - decay) * o, average, online))


def ema_network(graphdef, model_state):
  """(graphdef, state) of the EMA network alone, from the split EMAModel."""
  return nnx.split(nnx.merge(graphdef, model_state).ema)


class FlowTask(Task):
  best_metric = 'val_loss'
  best_mode = 'min'
  trainable = TRAINABLE
  summary_metrics = ('flow_loss',)

  def create_model(self, seed: int) -> EMAModel:
    return EMAModel(models.create_generator(self.config.model, len(self.classes), self.config.data.image_size, seed))

  def loss(self, model, batch, key):
    f, d = self.config.flow, self.config.data
    k_flip, k_noise, k_time, k_drop = jax.random.split(key, 4)
    data = augment.flip_transform(batch['image'], batch['size'], k_flip, image_size=d.image_size,
                                  crop_fraction=augment.eval_crop(d), flip=d.flip, norm=d.normalization)
    n = data.shape[0]
    noise = jax.random.normal(k_noise, data.shape, jnp.float32)
    t = flow.sample_timesteps(k_time, n, f.timesteps, f.logit_mean, f.logit_std)
    dropped = jax.random.bernoulli(k_drop, f.label_dropout, (n,))  # Teaches the null label for guidance.
    labels = jnp.where(dropped, model.net.null_label, batch['label'])
    return jnp.mean(flow.per_example_loss(model.net, data, labels, noise, t)), {}

  def after_update(self, model, step):
    update_ema(model, ema_decay(step, self.config.ema.decay))

  def validate(self, graphdef, model_state, split, mesh) -> dict[str, float]:
    return {'val_loss': validation_loss(self.config, *ema_network(graphdef, model_state), split, mesh)}

  def report(self, graphdef, model_state, split, mesh) -> dict:
    loss = validation_loss(self.config, *ema_network(graphdef, model_state), split, mesh)
    return dict(flow_loss=loss, num_examples=len(split), classes=self.classes)

  def on_evaluation(self, graphdef, model_state, step: int, workdir: str) -> None:
    """Writes WORKDIR/samples/step_N.png: one row per class, the same noise (`sample.seed`) every time."""
    from tinycats.generator import Generator  # It builds on this module.
    generator = Generator(self.config, *ema_network(graphdef, model_state), step)
    grid = generator.sample_grid(per_label=self.config.sample.per_class, seed=self.config.sample.seed)
    metrics.save_grid(grid, os.path.join(workdir, 'samples', f'step_{step}.png'), self.classes)


# Draws of (noise, t) per validation image; t is stratified over [0, 1] across them.
VALIDATION_DRAWS = 4


@functools.lru_cache(maxsize=8)
def _loss_fn(graphdef, image_size: int, crop_fraction: float, norm: str, mesh):
  def losses(state, images, sizes, labels, index, seed):
    model = nnx.merge(graphdef, state)
    model.eval()
    data = augment.eval_transform(images, sizes, image_size=image_size, crop_fraction=crop_fraction, norm=norm)
    total = 0.0
    for draw in range(VALIDATION_DRAWS):
      keys = jax.vmap(lambda i: jax.random.fold_in(jax.random.fold_in(jax.random.key(seed), i), draw))(index)
      noise = jax.vmap(lambda k: jax.random.normal(jax.random.fold_in(k, 0), data.shape[1:]))(keys)
      u = jax.vmap(lambda k: jax.random.uniform(jax.random.fold_in(k, 1), ()))(keys)
      total += flow.per_example_loss(model, data, labels, noise, (draw + u) / VALIDATION_DRAWS)
    return total / VALIDATION_DRAWS
  batch = step_lib.batch_sharding(mesh)
  return jax.jit(losses, in_shardings=(step_lib.replicated(mesh), batch, batch, batch, batch, None),
                 out_shardings=step_lib.replicated(mesh))


def validation_loss(config, graphdef, state, split, mesh, seed: int = 0) -> float:
  """The flow-matching loss on a split: per image, VALIDATION_DRAWS draws with t stratified over [0, 1].

  Each draw's noise and time follow from (seed, image index, draw), so the number does not depend
  on the batch size or the device count, and two checkpoints are compared on the same draws.
  """
  d = config.data
  fn = _loss_fn(graphdef, d.image_size, augment.eval_crop(d), d.normalization, mesh)
  index = np.arange(len(split), dtype=np.int32)
  per_example = step_lib.run_batched(lambda st, x, s, y, i: fn(st, x, s, y, i, seed), state,
                                     (split.images, np.asarray(split.sizes, np.int32), split.labels.astype(np.int32),
                                      index),
                                     config.train.eval_batch_size, mesh)
  return float(np.mean(per_example))
