"""A generator judged on a split: its flow-matching loss, on draws of (noise, t) fixed by the image index.

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

  batch = sharding.batch_sharding(mesh)
  return jax.jit(
    losses,
    in_shardings=(sharding.replicated(mesh), batch, batch, batch, batch, None),
    out_shardings=sharding.replicated(mesh),
  )


def validation_loss(config, graphdef, state, split, mesh, seed: int = 0) -> float:
  """The flow-matching loss on a split: per image, VALIDATION_DRAWS draws with t stratified over [0, 1].

  Each draw's noise and time follow from (seed, image index, draw), so the number does not depend
  on the batch size or the device count, and two checkpoints are compared on the same draws.
  """
  d = config.data
  fn = _loss_fn(graphdef, d.image_size, augment.eval_crop(d), d.normalization, mesh)
  index = np.arange(len(split), dtype=np.int32)
  per_example = sharding.run_batched(
    lambda st, x, s, y, i: fn(st, x, s, y, i, seed),
    state,
    (split.images, np.asarray(split.sizes, np.int32), split.labels.astype(np.int32), index),
    config.train.eval_batch_size,
    mesh,
  )
  return float(np.mean(per_example))
