"""The functional train step: gradient accumulation gives the update of the whole batch."""

import jax
import jax.numpy as jnp
import numpy as np
import optax
import pytest
from flax import nnx

from tinycats import sharding
from tinycats.train import step as step_lib


class Linear(nnx.Module):
  def __init__(self):
    self.layer = nnx.Linear(3, 2, rngs=nnx.Rngs(0))

  def __call__(self, x):
    return self.layer(x)


def _loss(model, batch, key):
  err = model(batch['x']) - batch['y']
  return jnp.mean(err**2), {'mean_error': jnp.mean(err)}


def _one_step(grad_accum):
  model = Linear()
  optimizer = nnx.Optimizer(model, optax.adamw(0.1), wrt=nnx.Param)
  graphdef, state = nnx.split((model, optimizer))
  mesh = sharding.make_mesh()
  train_step = step_lib.TrainStep(graphdef, _loss, mesh, grad_accum=grad_accum)
  rng = np.random.default_rng(0)
  batch = {'x': rng.normal(size=(8, 3)).astype(np.float32), 'y': rng.normal(size=(8, 2)).astype(np.float32)}
  state, metrics = train_step(state, sharding.shard_batch(batch, mesh), jax.random.key(0), 0)
  return nnx.to_pure_dict(state[0]), jax.device_get(metrics)


def test_gradient_accumulation_matches_the_whole_batch():
  whole_params, whole_metrics = _one_step(1)
  for k in (2, 4):
    params, metrics = _one_step(k)
    jax.tree.map(lambda a, b: np.testing.assert_allclose(a, b, atol=1e-6), whole_params, params)
    for name in ('loss', 'grad_norm', 'mean_error'):
      np.testing.assert_allclose(metrics[name], whole_metrics[name], rtol=1e-5, atol=1e-7)


def _accumulated_step(config, classes):
  """Two grad_accum=2 steps of the task `config` describes: (metrics, state before, state after)."""
  from tinycats.train import state as state_lib
  from tinycats.train.tasks import TASKS

  task = TASKS[config.task](config, [str(i) for i in range(classes)])
  model, optimizer, _ = state_lib.create(task, config, 10, 30)
  graphdef, state = nnx.split((model, optimizer))
  before = jax.tree.map(np.asarray, nnx.to_pure_dict(state[0]))
  mesh = sharding.make_mesh()
  train_step = step_lib.TrainStep(
    graphdef, task.loss, mesh, wrt=task.trainable, after_update=task.after_update, grad_accum=2
  )
  rng = np.random.default_rng(0)
  size = config.data.cache_size
  batch = {
    'image': rng.integers(0, 255, (8, size, size, 3), dtype=np.uint8),
    'size': rng.integers(size // 2, size + 1, (8, 2)).astype(np.int32),
    'label': rng.integers(0, classes, 8).astype(np.int32),
  }
  for step in range(2):  # The first update's warmup learning rate is 0.
    state, metrics = train_step(state, sharding.shard_batch(batch, mesh), jax.random.key(0), step)
  return metrics, before, nnx.to_pure_dict(state[0])


def _changed(after, before, *path):
  for key in path:
    after, before = after[key], before[key]
  return bool(np.any(np.asarray(after) != before))


class Normed(nnx.Module):
  def __init__(self):
    self.layer = nnx.Linear(3, 2, rngs=nnx.Rngs(0))
    self.norm = nnx.BatchNorm(2, rngs=nnx.Rngs(0))

  def __call__(self, x):
    return self.norm(self.layer(x))


def test_gradient_accumulation_carries_batchnorm_statistics_through_the_micro_batches():
  model = Normed()
  graphdef, state = nnx.split((model, nnx.Optimizer(model, optax.sgd(0.1), wrt=nnx.Param)))
  mesh = sharding.make_mesh()
  rng = np.random.default_rng(0)
  batch = {'x': rng.normal(3.0, 1.0, size=(8, 3)).astype(np.float32), 'y': rng.normal(size=(8, 2)).astype(np.float32)}
  state, _ = step_lib.TrainStep(graphdef, _loss, mesh, grad_accum=2)(
    state, sharding.shard_batch(batch, mesh), jax.random.key(0), 0
  )
  mean = np.asarray(nnx.to_pure_dict(state[0])['norm']['mean'])
  assert np.all(mean != 0)  # Both micro-batches updated the running mean (it starts at 0).


def test_gradient_accumulation_runs_the_generator_and_moves_its_ema():
  from conftest import tiny_config

  dit = tiny_config(
    '--config.data.source=folder',
    '--config.data.folder=unused',
    '--config.train.grad_accum=2',
    '--config.model.width=32',
    '--config.model.depth=1',
    '--config.model.heads=2',
    '--config.data.image_size=16',
    '--config.data.cache_size=16',
    spec='configs/dit.py:smoke',
    base=[],
  )
  metrics, before, after = _accumulated_step(dit, 4)
  assert np.isfinite(float(metrics['loss'])) and _changed(after, before, 'ema', 'final_layer', 'linear', 'kernel')


@pytest.mark.parametrize('dtype', ['float32', 'bfloat16'])
def test_the_default_generator_recipe_trains_a_step_in_float32_and_bfloat16(dtype):
  """configs/dit.py as it is (128 px, patch 16, its prediction, time sampling and block), but 2 blocks deep for
  the CPU's compile time: a step is finite and moves the network and its EMA."""
  from conftest import tiny_config

  dit = tiny_config(
    '--config.data.source=folder',
    '--config.data.folder=unused',
    f'--config.model.dtype={dtype}',
    '--config.model.depth=2',
    '--config.data.cache_size=128',
    spec='configs/dit.py',
    base=[],
  )
  metrics, before, after = _accumulated_step(dit, 13)
  assert np.isfinite(float(metrics['loss'])) and np.isfinite(float(metrics['grad_norm']))
  assert _changed(after, before, 'net', 'final_layer', 'linear', 'kernel')
  assert _changed(after, before, 'ema', 'final_layer', 'linear', 'kernel')
