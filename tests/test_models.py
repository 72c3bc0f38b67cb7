import jax
import jax.numpy as jnp
import numpy as np
import optax
import pytest
from flax import nnx

from tinycats import models
from tinycats.models import resnet


def _count(module, kind=nnx.Param):
  return sum(v.size for _, v in nnx.to_flat_state(nnx.state(module, kind)))


@pytest.mark.parametrize('build, params', [(models.resnet18, 11_689_512), (models.resnet34, 21_797_672)])
def test_parameter_counts_match_torchvision(build, params):
  model = nnx.eval_shape(lambda: build(1000, rngs=nnx.Rngs(0)))
  assert _count(model) == params


def test_torchvision_module_names():
  model = nnx.eval_shape(lambda: models.resnet18(10, rngs=nnx.Rngs(0)))
  paths = {'.'.join(map(str, p)) for p, _ in nnx.to_flat_state(nnx.state(model))}
  for name in ('conv1.kernel', 'bn1.scale', 'bn1.mean', 'bn1.var', 'layer1.0.conv1.kernel', 'layer1.1.bn2.bias',
               'layer2.0.downsample.0.kernel', 'layer2.0.downsample.1.var', 'layer4.1.conv2.kernel', 'fc.kernel'):
    assert name in paths, name
  assert 'layer1.0.downsample.0.kernel' not in paths


def test_max_pool_matches_reduce_window_with_symmetric_padding():
  x = jax.random.normal(jax.random.key(0), (2, 9, 8, 3))
  expected = jax.lax.reduce_window(x, -jnp.inf, jax.lax.max, (1, 3, 3, 1), (1, 2, 2, 1),
                                   ((0, 0), (1, 1), (1, 1), (0, 0)))
  np.testing.assert_array_equal(resnet.max_pool_3x3_s2(x), expected)


def test_stem_padding_is_symmetric():
  """A 7x7 stride-2 conv on an even size must see one more column on the left than Flax 'SAME' would give."""
  model = models.resnet18(2, width=8, dtype=jnp.float32, rngs=nnx.Rngs(0))
  x = jax.random.normal(jax.random.key(1), (1, 32, 32, 3))
  kernel = model.conv1.kernel[...]
  expected = jax.lax.conv_general_dilated(x, kernel, (2, 2), ((3, 3), (3, 3)),
                                          dimension_numbers=('NHWC', 'HWIO', 'NHWC'))
  np.testing.assert_allclose(model.conv1(x), expected, atol=1e-5)


def test_bf16_policy_keeps_parameters_and_statistics_float32():
  model = models.resnet18(3, width=8, rngs=nnx.Rngs(0))
  optimizer = nnx.Optimizer(model, optax.adamw(1e-3), wrt=nnx.Param)
  x = jax.random.normal(jax.random.key(0), (4, 32, 32, 3))
  labels = jnp.array([0, 1, 2, 0])

  @nnx.jit
  def train_step(model, optimizer, x, labels):
    def loss_fn(model):
      logits = model(x, rngs=nnx.Rngs(dropout=1))
      assert logits.dtype == jnp.float32
      return optax.softmax_cross_entropy_with_integer_labels(logits, labels).mean()
    loss, grads = nnx.value_and_grad(loss_fn)(model)
    optimizer.update(model, grads)
    return loss

  before = model.bn1.mean[...].copy()
  assert np.isfinite(float(train_step(model, optimizer, x, labels)))
  dtypes = {v.dtype for _, v in nnx.to_flat_state(nnx.state(model))}
  assert dtypes == {jnp.dtype('float32')}
  assert not np.allclose(model.bn1.mean[...], before)  # Statistics were updated (momentum 0.9).
  # The convolutions compute in bfloat16.
  assert model.conv1(x).dtype == jnp.bfloat16


def test_eval_mode_is_deterministic_and_uses_running_statistics():
  model = models.resnet18(2, width=8, dropout=0.5, rngs=nnx.Rngs(0))
  model.eval()
  x = jax.random.normal(jax.random.key(0), (2, 32, 32, 3))
  np.testing.assert_array_equal(model(x), model(x))
  np.testing.assert_allclose(model(x[:1]), model(x)[:1], atol=1e-2)  # No batch statistics in eval mode.
