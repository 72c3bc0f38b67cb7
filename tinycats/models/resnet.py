"""ResNet18/34 in Flax NNX with torchvision's module names and shapes.

Module paths mirror torchvision (`conv1`, `bn1`, `layer2.0.downsample.0`, `fc`) so that
torchvision checkpoints map one-to-one. Padding is explicit and symmetric like PyTorch's
(Flax's 'SAME' pads (0, 1) on even sizes), BatchNorm momentum 0.9 is PyTorch's 0.1, and
max-pooling pads with -inf and then pools VALID (exact, and exports cleanly to ONNX).
Inputs are NHWC floats. Parameters and BatchNorm statistics are float32; the convolutions
run in `dtype` (bfloat16 by default), pooling and the linear head in float32.
"""

from __future__ import annotations

import jax
import jax.numpy as jnp
from flax import nnx

_BN = dict(momentum=0.9, epsilon=1e-5)


def _conv(cin, cout, kernel, stride, padding, dtype, rngs):
  return nnx.Conv(
    cin,
    cout,
    (kernel, kernel),
    strides=(stride, stride),
    padding=((padding, padding),) * 2,
    use_bias=False,
    dtype=dtype,
    param_dtype=jnp.float32,
    kernel_init=nnx.initializers.variance_scaling(2.0, 'fan_out', 'normal'),
    rngs=rngs,
  )


def _bn(features, dtype, rngs):
  return nnx.BatchNorm(features, dtype=dtype, param_dtype=jnp.float32, rngs=rngs, **_BN)


def max_pool_3x3_s2(x):
  """torchvision's MaxPool2d(3, 2, padding=1): pad with -inf, then pool without padding."""
  x = jnp.pad(x, ((0, 0), (1, 1), (1, 1), (0, 0)), constant_values=-jnp.inf)
  return nnx.max_pool(x, window_shape=(3, 3), strides=(2, 2), padding='VALID')  # keywords: jax2onnx's patch needs them


class BasicBlock(nnx.Module):
  """Two 3x3 convolutions with a residual; `downsample` (1x1 conv + BN) when the shape changes."""

  def __init__(self, cin, cout, stride, *, dtype, rngs):
    self.conv1 = _conv(cin, cout, 3, stride, 1, dtype, rngs)
    self.bn1 = _bn(cout, dtype, rngs)
    self.conv2 = _conv(cout, cout, 3, 1, 1, dtype, rngs)
    self.bn2 = _bn(cout, dtype, rngs)
    if stride != 1 or cin != cout:
      self.downsample = nnx.List([_conv(cin, cout, 1, stride, 0, dtype, rngs), _bn(cout, dtype, rngs)])
    else:
      self.downsample = None

  def __call__(self, x):
    residual = x
    y = nnx.relu(self.bn1(self.conv1(x)))
    y = self.bn2(self.conv2(y))
    if self.downsample is not None:
      conv, bn = self.downsample
      residual = bn(conv(x))
    return nnx.relu(y + residual)


class ResNet(nnx.Module):
  """torchvision ResNet with BasicBlocks; `stage_sizes` (2,2,2,2) is ResNet18, (3,4,6,3) ResNet34."""

  def __init__(self, stage_sizes, num_classes, *, width=64, dropout=0.0, dtype=jnp.bfloat16, rngs: nnx.Rngs):
    self.dtype = dtype
    self.conv1 = _conv(3, width, 7, 2, 3, dtype, rngs)
    self.bn1 = _bn(width, dtype, rngs)
    cin = width
    for i, blocks in enumerate(stage_sizes):
      cout = width * 2**i
      stage = [
        BasicBlock(cin if b == 0 else cout, cout, 2 if (i > 0 and b == 0) else 1, dtype=dtype, rngs=rngs)
        for b in range(blocks)
      ]
      setattr(self, f'layer{i + 1}', nnx.List(stage))
      cin = cout
    self.num_stages = len(stage_sizes)
    self.dropout = nnx.Dropout(dropout)
    # The head computes in float32: it is cheap, and bf16 logits carry only ~3 significant digits.
    self.fc = nnx.Linear(cin, num_classes, dtype=jnp.float32, param_dtype=jnp.float32, rngs=rngs)

  def feature_map(self, x):
    """The last stage's activations (N, h, w, C), before pooling (NHWC float input): what Grad-CAM weighs."""
    x = nnx.relu(self.bn1(self.conv1(x.astype(self.dtype))))
    x = max_pool_3x3_s2(x)
    for i in range(self.num_stages):
      for block in getattr(self, f'layer{i + 1}'):
        x = block(x)
    return x

  def features(self, x):
    """Pooled features before the head (NHWC float input)."""
    return self.pool(self.feature_map(x))

  @staticmethod
  def pool(feature_map):
    """The global average pooling between `feature_map` and the head, in float32."""
    return jnp.mean(feature_map.astype(jnp.float32), axis=(1, 2))

  def __call__(self, x, *, rngs: nnx.Rngs | jax.Array | None = None):
    """Logits in float32. `rngs` feeds head dropout in training mode."""
    return self.fc(self.dropout(self.features(x), rngs=rngs))


def resnet18(num_classes=1000, *, width=64, dropout=0.0, dtype=jnp.bfloat16, rngs: nnx.Rngs) -> ResNet:
  return ResNet((2, 2, 2, 2), num_classes, width=width, dropout=dropout, dtype=dtype, rngs=rngs)


def resnet34(num_classes=1000, *, width=64, dropout=0.0, dtype=jnp.bfloat16, rngs: nnx.Rngs) -> ResNet:
  return ResNet((3, 4, 6, 3), num_classes, width=width, dropout=dropout, dtype=dtype, rngs=rngs)
