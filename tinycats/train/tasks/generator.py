"""The generator task: a class-conditional DiT trained by rectified flow, with an EMA of its weights.

The model the loop trains is `models.EMAModel`; validation, sample grids, `Generator`, evaluation
and export all use its EMA network (`network`). The validation loss is `evaluators.flow_loss`, the
sample grids `flow.sample_grid`.
"""

from __future__ import annotations

import os

import jax
import jax.numpy as jnp

from tinycats import flow, models, plots
from tinycats.data import augment
from tinycats.evaluators import flow_loss
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
    return {'val_loss': flow_loss.validation_loss(self.config, graphdef, state, split, mesh)}

  def report(self, graphdef, state, split, mesh) -> dict:
    return dict(
      flow_loss=flow_loss.validation_loss(self.config, graphdef, state, split, mesh),
      num_examples=len(split),
      classes=self.classes,
    )

  def on_evaluation(self, graphdef, state, step: int, workdir: str) -> None:
    """Writes WORKDIR/samples/step_N.png: one row per class, the same noise (`sample.seed`) every time."""
    grid = flow.sample_grid(
      self.config, graphdef, state, per_label=self.config.sample.per_class, seed=self.config.sample.seed
    )
    plots.save_grid(grid, os.path.join(workdir, 'samples', f'step_{step}.png'), self.classes)
