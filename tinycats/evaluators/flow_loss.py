"""A generator judged on a split: its flow-matching loss, on draws of (noise, t) fixed by the image index.

The times are stratified draws of the training's own time distribution (`flow.timesteps`), so the validation
loss is the objective the training minimises, measured on held-out pictures. Uniform times would weigh the
near-data end, which a logit-normal recipe hardly trains and which an x-predicting network's 1 / (1 - t)^2 makes
loud: that loss kept falling early checkpoints as 'best' whose samples were worse (BENCHMARKS.md).

The network (`graphdef`, `state`: the velocity model, for a generator run its EMA DiT) is the predict function
here: the loss runs it inside one jitted function per batch.
"""

from __future__ import annotations

import functools

import jax
import numpy as np
from flax import nnx

from tinycats import flow, sharding
from tinycats.data import augment

# Draws of (noise, t) per validation image; t is stratified over [0, 1] across them.
VALIDATION_DRAWS = 4


@functools.lru_cache(maxsize=8)
def _loss_fn(graphdef, image_size: int, crop_fraction: float, norm: str, times: tuple, mesh):
  def losses(state, images, sizes, labels, index, seed):
    model = nnx.merge(graphdef, state)
    model.eval()
    data = augment.eval_transform(images, sizes, image_size=image_size, crop_fraction=crop_fraction, norm=norm)
    total = 0.0
    for draw in range(VALIDATION_DRAWS):
      keys = jax.vmap(lambda i: jax.random.fold_in(jax.random.fold_in(jax.random.key(seed), i), draw))(index)
      noise = jax.vmap(lambda k: jax.random.normal(jax.random.fold_in(k, 0), data.shape[1:]))(keys)
      u = jax.vmap(lambda k: jax.random.uniform(jax.random.fold_in(k, 1), ()))(keys)
      t = flow.timestep_quantile((draw + u) / VALIDATION_DRAWS, *times)
      total += flow.per_example_loss(model, data, labels, noise, t)
    return total / VALIDATION_DRAWS

  batch = sharding.batch_sharding(mesh)
  return jax.jit(
    losses,
    in_shardings=(sharding.replicated(mesh), batch, batch, batch, batch, None),
    out_shardings=sharding.replicated(mesh),
  )


def validation_loss(config, graphdef, state, split, mesh, seed: int = 0) -> float:
  """The flow-matching loss on a split: per image, VALIDATION_DRAWS draws of t, stratified over the quantiles of
  the training's time distribution.

  Each draw's noise and time follow from (seed, image index, draw), so the number does not depend
  on the batch size or the device count, and two checkpoints are compared on the same draws.
  """
  d = config.data
  f = config.flow
  times = (f.get('timesteps', 'uniform'), f.get('logit_mean', 0.0), f.get('logit_std', 1.0))
  fn = _loss_fn(graphdef, d.image_size, augment.eval_crop(d), d.normalization, times, mesh)
  index = np.arange(len(split), dtype=np.int32)
  per_example = sharding.run_batched(
    lambda st, x, s, y, i: fn(st, x, s, y, i, seed),
    state,
    (split.images, np.asarray(split.sizes, np.int32), split.labels.astype(np.int32), index),
    config.train.eval_batch_size,
    mesh,
  )
  return float(np.mean(per_example))
