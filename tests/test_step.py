"""The functional train step: gradient accumulation gives the update of the whole batch."""
import jax
import jax.numpy as jnp
import numpy as np
import optax
from flax import nnx

from tinycats.train import step as step_lib


class Linear(nnx.Module):
  def __init__(self):
    self.layer = nnx.Linear(3, 2, rngs=nnx.Rngs(0))

  def __call__(self, x):
    return self.layer(x)


def _loss(model, batch, key):
  err = model(batch['x']) - batch['y']
  return jnp.mean(err ** 2), {'mean_error': jnp.mean(err)}


def _one_step(grad_accum):
  model = Linear()
  optimizer = nnx.Optimizer(model, optax.adamw(0.1), wrt=nnx.Param)
  graphdef, state = nnx.split((model, optimizer))
  mesh = step_lib.make_mesh()
  train_step = step_lib.TrainStep(graphdef, _loss, mesh, grad_accum=grad_accum)
  rng = np.random.default_rng(0)
  batch = {'x': rng.normal(size=(8, 3)).astype(np.float32), 'y': rng.normal(size=(8, 2)).astype(np.float32)}
  state, metrics = train_step(state, step_lib.shard_batch(batch, mesh), jax.random.key(0), 0)
  return nnx.to_pure_dict(state[0]), jax.device_get(metrics)


def test_gradient_accumulation_matches_the_whole_batch():
  whole_params, whole_metrics = _one_step(1)
  for k in (2, 4):
    params, metrics = _one_step(k)
    jax.tree.map(lambda a, b: np.testing.assert_allclose(a, b, atol=1e-6), whole_params, params)
    for name in ('loss', 'grad_norm', 'mean_error'):
      np.testing.assert_allclose(metrics[name], whole_metrics[name], rtol=1e-5, atol=1e-7)
