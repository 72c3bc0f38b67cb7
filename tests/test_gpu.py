"""What only a real accelerator can show: marked `gpu`, skipped on a CPU (`benchmarks/gpu.sh` runs them).

`benchmarks/gpu.sh --cpu` (and so `.ci/run`) runs them on the CPU at the same tiny sizes, with
TINYCATS_GPU_TESTS=cpu, so that they cannot rot before a GPU is lent: there `dtype` 'auto' is
float32, so the bf16 comparison asks for bfloat16 explicitly, as it does on the GPU.
"""

from __future__ import annotations

import os

import jax
import numpy as np
import pytest
from conftest import DIT_TINY, TINY, tiny_config
from flax import nnx

from tinycats import Classifier, Generator, sharding
from tinycats.data import shapes
from tinycats.train import checkpoint, loop, state as state_lib, step as step_lib, tasks

pytestmark = pytest.mark.gpu

# bf16 against float32 on the same weights and batch. A random ResNet's gradient is itself that sensitive: on the
# CPU, float32 with its weights moved by bf16's relative rounding (2^-8) has gradient cosine 0.916 with the
# unmoved one, and bf16 compute 0.921. So bf16's gradient error is bounded by that sensitivity (x SLACK), not
# by a fixed number; the loss within LOSS_RTOL. The float32 reference runs at 'highest' precision (no TF32).
LOSS_RTOL = 0.02
SLACK = 2.0
DIT = 'configs/dit.py:smoke'


def _batch(config, n: int = 8, seed: int = 0) -> dict:
  rng = np.random.default_rng(seed)
  size = config.data.cache_size
  return {
    'image': rng.integers(0, 255, (n, size, size, 3), dtype=np.uint8),
    'size': np.full((n, 2), size, np.int32),
    'label': rng.integers(0, 4, n).astype(np.int32),
  }


def _loss_and_grads(config, batch, jitter: float = 0.0):
  """(loss, flat gradient) of the task's loss on `batch`, under jit; weights seeded by config.seed, and with
  `jitter` each weight matrix scaled by (1 + jitter x N(0, 1)) elementwise."""
  task = tasks.TASKS[config.task](config, [str(i) for i in range(4)])
  graphdef, state = nnx.split(task.create_model(config.seed))
  if jitter:
    noise = lambda p: p * (1 + jitter * jax.random.normal(jax.random.key(5), p.shape, p.dtype))
    state = jax.tree.map(lambda p: noise(p) if p.dtype == np.float32 and p.ndim > 1 else p, state)

  @jax.jit
  def run(state, batch):
    model = nnx.merge(graphdef, state)
    model.train()
    grad_fn = nnx.value_and_grad(task.loss, argnums=nnx.DiffState(0, task.trainable), has_aux=True)
    (loss, _), grads = grad_fn(model, batch, jax.random.key(1))
    return loss, jax.numpy.concatenate([g.ravel().astype(np.float32) for g in jax.tree.leaves(grads)])

  precision = 'highest' if config.model.dtype == 'float32' else 'default'
  with jax.default_matmul_precision(precision):
    loss, grads = run(state, sharding.shard_batch(batch, sharding.make_mesh()))
  return float(loss), np.asarray(grads, np.float64)


def _distance(a, b) -> float:
  """1 - cosine similarity."""
  return 1.0 - float(a @ b / (np.linalg.norm(a) * np.linalg.norm(b)))


@pytest.mark.parametrize('spec, base', [('configs/cats.py:smoke', TINY), (DIT, DIT_TINY)])
def test_bf16_loss_and_gradients_agree_with_float32(spec, base):
  """The mixed-precision policy on this device: bf16 compute, float32 parameters, norms and loss."""
  f32, bf16 = (tiny_config(f'--config.model.dtype={d}', spec=spec, base=base) for d in ('float32', 'bfloat16'))
  batch = _batch(f32)
  loss32, grads32 = _loss_and_grads(f32, batch)
  loss16, grads16 = _loss_and_grads(bf16, batch)
  _, moved = _loss_and_grads(f32, batch, jitter=2.0**-8)
  assert np.isfinite(loss16) and abs(loss16 - loss32) <= LOSS_RTOL * abs(loss32), (loss16, loss32)
  sensitivity = _distance(moved, grads32)
  assert _distance(grads16, grads32) <= SLACK * sensitivity + 1e-5, (_distance(grads16, grads32), sensitivity)
  norm_ratio = np.linalg.norm(grads16) / np.linalg.norm(grads32)
  assert abs(norm_ratio - 1) <= SLACK * abs(np.linalg.norm(moved) / np.linalg.norm(grads32) - 1) + 0.02


def test_the_step_shards_the_batch_over_every_device():
  """One data-parallel step over all of this machine's devices: each holds its share of the batch, and the
  update (replicated) is the one a single device computes."""
  config = tiny_config()
  task = tasks.TASKS[config.task](config, ['a', 'b', 'c', 'd'])
  batch = _batch(config, n=8 * jax.device_count())

  def one_step(devices):
    mesh = sharding.make_mesh(devices)
    model, optimizer, _ = state_lib.create(task, config, 10, 10)
    graphdef, state = nnx.split((model, optimizer))
    state = jax.device_put(state, sharding.replicated(mesh))
    sharded = sharding.shard_batch(batch, mesh)
    assert len(sharded['image'].addressable_shards) == len(devices)
    assert {s.data.shape[0] for s in sharded['image'].addressable_shards} == {len(batch['image']) // len(devices)}
    state, metrics = step_lib.for_task(task, graphdef, mesh)(state, sharded, jax.random.key(0), 1)
    leaf = jax.tree.leaves(state)[0]
    assert leaf.sharding.device_set == set(devices)
    return jax.device_get(metrics)

  everywhere, alone = one_step(jax.devices()), one_step(jax.devices()[:1])
  np.testing.assert_allclose(everywhere['loss'], alone['loss'], rtol=1e-2)
  assert jax.devices()[0].platform == jax.default_backend()


def test_orbax_saves_and_restores_device_arrays(tmp_path):
  """A checkpoint of arrays on the device comes back equal, on the device the target names."""
  config = tiny_config()
  task = tasks.TASKS[config.task](config, ['a', 'b'])
  mesh = sharding.make_mesh()
  model, optimizer, _ = state_lib.create(task, config, 10, 10)
  state = jax.device_put(nnx.split((model, optimizer))[1], sharding.replicated(mesh))
  items = state_lib.to_checkpoint(state)
  ckpts = checkpoint.Checkpoints(str(tmp_path / 'checkpoints'), best_metric='score')
  ckpts.save(3, items, {'step': 3}, metrics={'score': 1.0})
  ckpts.wait()
  stored, meta = ckpts.restore(3, items)
  ckpts.close()
  assert meta['step'] == 3
  for saved, restored in zip(jax.tree.leaves(items), jax.tree.leaves(stored)):
    np.testing.assert_array_equal(np.asarray(saved), np.asarray(restored))
    assert restored.sharding.device_set == saved.sharding.device_set
    assert next(iter(restored.sharding.device_set)).platform == jax.default_backend()


@pytest.fixture(scope='module')
def folder(tmp_path_factory):
  root = str(tmp_path_factory.mktemp('gpu-shapes'))
  shapes.make_folder(root, ('circle', 'cross', 'square', 'triangle'), per_class=40, style=shapes.FLAT, fmt='jpg')
  return root


def test_inference_apis_on_this_device(folder, tmp_path):
  """A tiny classifier and generator trained here ('auto' dtype: bf16 on a GPU), then `Classifier` and
  `Generator` on this device: probabilities, the same answer for an image alone or in a batch, seeded samples."""
  data = ['--config.data.source=folder', f'--config.data.folder={folder}', '--config.train.epochs=2']
  classifier = loop.train_and_evaluate(tiny_config(*data), str(tmp_path / 'clf'))
  assert classifier['platform'] == jax.default_backend()
  clf = Classifier.load(str(tmp_path / 'clf'))
  rng = np.random.default_rng(0)
  images = [shapes.render(rng, name, shapes.FLAT) for name in ('circle', 'cross', 'square')]
  probs = clf.predict(images)
  assert probs.shape == (3, 4)
  np.testing.assert_allclose(probs.sum(axis=1), 1.0, atol=1e-5)
  np.testing.assert_allclose(clf.predict(images[:1])[0], probs[0], atol=2e-3)

  dit = tiny_config(*data, '--config.train.steps=20', '--config.train.eval_every=20', spec=DIT, base=DIT_TINY)
  loop.train_and_evaluate(dit, str(tmp_path / 'dit'))
  gen = Generator.load(str(tmp_path / 'dit'))
  first = gen.sample(['circle', 'cross'], steps=4, seed=3)
  assert first.shape == (2, 16, 16, 3) and first.dtype == np.uint8
  np.testing.assert_array_equal(gen.sample(['circle', 'cross'], steps=4, seed=3), first)


def test_these_tests_ran_where_they_were_meant_to():
  """On a GPU machine these tests must see the GPU, not fall back to the CPU unnoticed."""
  if os.environ.get('TINYCATS_GPU_TESTS') == 'cpu':
    assert jax.default_backend() == 'cpu'
  else:
    assert jax.default_backend() in ('gpu', 'tpu'), jax.devices()
