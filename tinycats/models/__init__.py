"""Model constructors: `resnet18`, `resnet34`, and `create_classifier(config, num_classes)`."""
import jax.numpy as jnp
from flax import nnx

from tinycats.models.resnet import ResNet, resnet18, resnet34

_RESNETS = {'resnet18': resnet18, 'resnet34': resnet34}


def create_classifier(model_config, num_classes: int, seed: int = 0) -> ResNet:
  """The classifier a config describes (`config.model`), with fresh weights."""
  build = _RESNETS[model_config.name]
  return build(num_classes, width=model_config.width, dropout=model_config.dropout,
               dtype=jnp.dtype(model_config.dtype), rngs=nnx.Rngs(seed))


__all__ = ['ResNet', 'resnet18', 'resnet34', 'create_classifier']
