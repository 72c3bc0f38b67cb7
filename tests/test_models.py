import jax
import jax.numpy as jnp
import numpy as np
import pytest
from conftest import tiny_config
from flax import nnx

from tinycats import models, sharding
from tinycats.models import resnet
from tinycats.train import state as state_lib, step as step_lib
from tinycats.train.tasks import TASKS


def _count(module, kind=nnx.Param):
  return sum(v.size for _, v in nnx.to_flat_state(nnx.state(module, kind)))


@pytest.mark.parametrize('build, params', [(models.resnet18, 11_689_512), (models.resnet34, 21_797_672)])
def test_parameter_counts_match_torchvision(build, params):
  model = nnx.eval_shape(lambda: build(1000, rngs=nnx.Rngs(0)))
  assert _count(model) == params


def test_torchvision_module_names():
  model = nnx.eval_shape(lambda: models.resnet18(10, rngs=nnx.Rngs(0)))
  paths = {'.'.join(map(str, p)) for p, _ in nnx.to_flat_state(nnx.state(model))}
  for name in (
    'conv1.kernel',
    'bn1.scale',
    'bn1.mean',
    'bn1.var',
    'layer1.0.conv1.kernel',
    'layer1.1.bn2.bias',
    'layer2.0.downsample.0.kernel',
    'layer2.0.downsample.1.var',
    'layer4.1.conv2.kernel',
    'fc.kernel',
  ):
    assert name in paths, name
  assert 'layer1.0.downsample.0.kernel' not in paths


def test_max_pool_matches_reduce_window_with_symmetric_padding():
  x = jax.random.normal(jax.random.key(0), (2, 9, 8, 3))
  expected = jax.lax.reduce_window(
    x, -jnp.inf, jax.lax.max, (1, 3, 3, 1), (1, 2, 2, 1), ((0, 0), (1, 1), (1, 1), (0, 0))
  )
  np.testing.assert_array_equal(resnet.max_pool_3x3_s2(x), expected)


def test_stem_padding_is_symmetric():
  """A 7x7 stride-2 conv on an even size must see one more column on the left than Flax 'SAME' would give."""
  model = models.resnet18(2, width=8, dtype=jnp.float32, rngs=nnx.Rngs(0))
  x = jax.random.normal(jax.random.key(1), (1, 32, 32, 3))
  kernel = model.conv1.kernel[...]
  expected = jax.lax.conv_general_dilated(
    x, kernel, (2, 2), ((3, 3), (3, 3)), dimension_numbers=('NHWC', 'HWIO', 'NHWC')
  )
  np.testing.assert_allclose(model.conv1(x), expected, atol=1e-5)


def test_bf16_policy_through_the_library_train_step():
  """After a real TrainStep, parameters, BatchNorm statistics and Adam moments are float32; convs run in bf16."""
  config = tiny_config('--config.data.source=folder', '--config.data.folder=unused', '--config.model.dtype=bfloat16')
  task = TASKS['classifier'](config, ['cat', 'other'])
  model, optimizer, _ = state_lib.create(task, config, 10, 10)
  before = np.asarray(model.bn1.mean[...])
  graphdef, state = nnx.split((model, optimizer))
  mesh = sharding.make_mesh()
  batch = sharding.shard_batch(
    {
      'image': np.random.default_rng(0).integers(0, 255, (16, 36, 36, 3), np.uint8),
      'size': np.full((16, 2), 36, np.int32),
      'label': np.arange(16, dtype=np.int32) % 2,
    },
    mesh,
  )
  state, metrics = step_lib.TrainStep(graphdef, task.loss, mesh)(state, batch, jax.random.key(0), 0)
  assert np.isfinite(float(metrics['loss'])) and metrics['loss'].dtype == jnp.float32
  dtypes = {str(v.dtype) for _, v in nnx.to_flat_state(state) if hasattr(v, 'dtype')}
  assert dtypes <= {'float32', 'int32', 'uint32'}, dtypes
  model, _ = nnx.merge(graphdef, state)
  assert not np.allclose(model.bn1.mean[...], before)  # Statistics were updated in training mode.
  assert model.conv1(jnp.ones((1, 32, 32, 3))).dtype == jnp.bfloat16


def test_auto_dtype_is_float32_on_cpu_and_bfloat16_on_accelerators(monkeypatch):
  config = tiny_config('--config.data.source=folder', '--config.data.folder=unused')
  assert config.model.dtype == 'auto'  # The recipes' default.
  assert models.compute_dtype('auto') == jnp.float32  # The tests run on XLA:CPU.
  assert models.create_classifier(config.model, 2).conv1(jnp.ones((1, 32, 32, 3))).dtype == jnp.float32
  assert models.compute_dtype('bfloat16') == jnp.bfloat16  # An explicit choice is kept.
  for backend, expected in (('gpu', jnp.bfloat16), ('tpu', jnp.bfloat16), ('cpu', jnp.float32)):
    monkeypatch.setattr(models.jax, 'default_backend', lambda backend=backend: backend)
    assert models.compute_dtype('auto') == expected, backend


def test_eval_mode_is_deterministic_and_uses_running_statistics():
  model = models.resnet18(2, width=8, dropout=0.5, rngs=nnx.Rngs(0))
  model.eval()
  x = jax.random.normal(jax.random.key(0), (2, 32, 32, 3))
  np.testing.assert_array_equal(model(x), model(x))
  np.testing.assert_allclose(model(x[:1]), model(x)[:1], atol=1e-2)  # No batch statistics in eval mode.
