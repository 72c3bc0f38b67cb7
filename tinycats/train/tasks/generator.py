"""The generator task: a class-conditional DiT trained by rectified flow, with an EMA of its weights.

The model the loop trains is `models.EMAModel`; validation, sample grids, `Generator`, evaluation
and export all use its EMA network (`network`). `sample` and `sample_grid` are the plain
functions that turn a network and labels into images, for the grids here and for `Generator`.
"""

from __future__ import annotations

import functools
import os

import jax
import jax.numpy as jnp
import numpy as np
from flax import nnx

from tinycats import flow, models, plots, sharding
from tinycats.data import augment
from tinycats.models import ema
from tinycats.train.tasks.base import Task


class GeneratorTask(Task):
  best_metric = 'val_loss'
  best_mode = 'min'
  trainable = ema.TRAINABLE
  summary_metrics = ('flow_loss',)

  def create_model(self, seed: int) -> ema.EMAModel:
    c = self.config
    return ema.EMAModel(
      models.create_generator(
        c.model,
        len(self.classes),
        c.data.image_size,
        seed,
        prediction=c.flow.get('prediction', 'v'),
        t_eps=c.flow.get('t_eps', 0.05),
      )
    )

  def loss(self, model, batch, key):
    f, d = self.config.flow, self.config.data
    k_flip, k_noise, k_time, k_drop = jax.random.split(key, 4)
    data = augment.flip_transform(
      batch['image'],
      batch['size'],
      k_flip,
      image_size=d.image_size,
      crop_fraction=augment.eval_crop(d),
      flip=d.flip,
      norm=d.normalization,
    )
    n = data.shape[0]
    noise = jax.random.normal(k_noise, data.shape, jnp.float32)
    t = flow.sample_timesteps(k_time, n, f.timesteps, f.logit_mean, f.logit_std)
    dropped = jax.random.bernoulli(k_drop, f.label_dropout, (n,))  # Teaches the null label for guidance.
    labels = jnp.where(dropped, model.net.null_label, batch['label'])
    return jnp.mean(flow.per_example_loss(model.net, data, labels, noise, t)), {}

  def after_update(self, model, step):
    ema.update_ema(model, ema.ema_decay(step, self.config.ema.decay))

  def network(self, graphdef, model_state):
    return ema.ema_network(graphdef, model_state)

  def validate(self, graphdef, state, split, mesh) -> dict[str, float]:
    return {'val_loss': validation_loss(self.config, graphdef, state, split, mesh)}

  def report(self, graphdef, state, split, mesh) -> dict:
    return dict(
      flow_loss=validation_loss(self.config, graphdef, state, split, mesh),
      num_examples=len(split),
      classes=self.classes,
    )

  def on_evaluation(self, graphdef, state, step: int, workdir: str) -> None:
    """Writes WORKDIR/samples/step_N.png: one row per class, the same noise (`sample.seed`) every time."""
    grid = sample_grid(
      self.config, graphdef, state, per_label=self.config.sample.per_class, seed=self.config.sample.seed
    )
    plots.save_grid(grid, os.path.join(workdir, 'samples', f'step_{step}.png'), self.classes)


def sample(
  config,
  graphdef,
  state,
  labels: np.ndarray,
  noise: np.ndarray,
  *,
  steps: int,
  cfg: float,
  sampler: str,
  guidance_interval=(0.0, 1.0),
  batch_size: int = 256,
  mesh=None,
) -> np.ndarray:
  """uint8 images (N, S, S, 3) from the DiT (`graphdef`, `state`), float32 NHWC `noise` and int `labels` (N,)."""
  interval = flow.check_guidance_interval(guidance_interval)

  def run(state, noise, labels):
    return flow.sample(
      graphdef, state, noise, labels, steps=steps, cfg=cfg, sampler=sampler, guidance_interval=interval
    )

  images = sharding.run_batched(
    run, state, (np.asarray(noise, np.float32), np.asarray(labels, np.int32)), batch_size, mesh or sharding.make_mesh()
  )
  return augment.to_uint8(images, config.data.normalization)


def sample_grid(
  config,
  graphdef,
  state,
  labels=None,
  per_label: int = 8,
  *,
  seed: int = 0,
  steps: int | None = None,
  cfg: float | None = None,
  sampler: str | None = None,
  guidance_interval=None,
  **kwargs,
) -> np.ndarray:
  """uint8 (len(labels), per_label, S, S, 3): one row per label index (all classes by default), seeded noise.

  Sampling settings default to the run's `sample.*`.
  """
  s = config.sample
  labels = list(range(len(config.data.classes))) if labels is None else list(labels)
  index = np.repeat(np.asarray(labels, np.int32), per_label)
  noise = flow.noise_like(seed, len(index), config.data.image_size)
  images = sample(
    config,
    graphdef,
    state,
    index,
    noise,
    steps=s.steps if steps is None else steps,
    cfg=s.cfg if cfg is None else cfg,
    sampler=sampler or s.sampler,
    guidance_interval=s.get('guidance_interval', (0.0, 1.0)) if guidance_interval is None else guidance_interval,
    **kwargs,
  )
  return images.reshape((len(labels), per_label) + images.shape[1:])


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
