"""Model constructors: the ResNet classifiers and the DiT generator, built from `config.model`."""

import jax
import jax.numpy as jnp
from flax import nnx

from tinycats import stored_config
from tinycats.models.dit import DiT
from tinycats.models.ema import EMAModel
from tinycats.models.resnet import ResNet, resnet18, resnet34

_RESNETS = {'resnet18': resnet18, 'resnet34': resnet34}


def compute_dtype(name: str) -> jnp.dtype:
  """`model.dtype` as a dtype. 'auto' is bfloat16 on a GPU or TPU and float32 on a CPU, where XLA's bfloat16
  kernels are slower than its float32 ones (BENCHMARKS.md); it is resolved here, where the model is built."""
  if name == 'auto':
    name = 'float32' if jax.default_backend() == 'cpu' else 'bfloat16'
  return jnp.dtype(name)


def create_classifier(model_config, num_classes: int, seed: int = 0) -> ResNet:
  """The classifier a config describes (`config.model`), with fresh weights."""
  build = _RESNETS[model_config.name]
  return build(
    num_classes,
    width=model_config.width,
    dropout=model_config.dropout,
    dtype=compute_dtype(model_config.dtype),
    rngs=nnx.Rngs(seed),
  )


def create_generator(
  model_config, num_classes: int, image_size: int, seed: int = 0, *, prediction: str = 'v', t_eps: float = 0.05
) -> DiT:
  """The DiT a config describes, for `num_classes` labels (plus the null label) and square images.

  `prediction` and `t_eps` are the run's `flow.prediction` and `flow.t_eps` (what the network outputs)."""
  return DiT(
    image_size=image_size,
    patch_size=model_config.patch_size,
    width=model_config.width,
    depth=model_config.depth,
    heads=model_config.heads,
    mlp_ratio=model_config.mlp_ratio,
    num_classes=num_classes,
    # A config from before a block option existed lacks it: the value it had then.
    **{name: model_config.get(name, old) for name, old in stored_config.GENERATOR_BEFORE['model'].items()},
    prediction=prediction,
    t_eps=t_eps,
    dtype=compute_dtype(model_config.dtype),
    rngs=nnx.Rngs(seed),
  )


__all__ = [
  'DiT',
  'EMAModel',
  'ResNet',
  'resnet18',
  'resnet34',
  'compute_dtype',
  'create_classifier',
  'create_generator',
]
