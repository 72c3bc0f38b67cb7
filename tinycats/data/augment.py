"""Jittable image transforms on uint8 batches: they run inside the train step, on the device.

`train_transform` is random resized crop + horizontal flip + colour jitter; `eval_transform`
is the central `image_size` crop of the cached square (torchvision's Resize(256) +
CenterCrop(224) when the cache is 256 px and the network sees 224). Both end with the configured normalisation, so
training, evaluation, prediction and export all see the same input convention.
"""
from __future__ import annotations

import math

import jax
import jax.numpy as jnp
import numpy as np

IMAGENET_MEAN = (0.485, 0.456, 0.406)
IMAGENET_STD = (0.229, 0.224, 0.225)


NORMALIZATIONS = {
    'imagenet': (IMAGENET_MEAN, IMAGENET_STD),
    'none': ((0.0, 0.0, 0.0), (1.0, 1.0, 1.0)),  # Pixels stay in [0, 1].
    'symmetric': ((0.5, 0.5, 0.5), (0.5, 0.5, 0.5)),  # Pixels in [-1, 1]: the generator's data, like its noise.
}


def normalization(name: str) -> tuple[tuple[float, ...], tuple[float, ...]]:
  """(mean, std) applied to pixels in [0, 1]."""
  return NORMALIZATIONS[name]


def to_uint8(x, norm: str) -> np.ndarray:
  """Normalised float images back to uint8 pixels (the inverse of the transforms' last step)."""
  mean, std = normalization(norm)
  x = np.asarray(x, np.float32) * np.asarray(std, np.float32) + np.asarray(mean, np.float32)
  return np.clip(np.round(x * 255.0), 0, 255).astype(np.uint8)


def _normalize(x, norm):
  mean, std = normalization(norm)
  return (x - jnp.asarray(mean, jnp.float32)) / jnp.asarray(std, jnp.float32)


def _crop_resize(image, top, left, height, width, size):
  """Crops the box (floats, pixels) from one HWC image and resizes it to size x size (antialiased)."""
  scale = jnp.stack([size / height, size / width])
  translation = -jnp.stack([top, left]) * scale
  return jax.image.scale_and_translate(image, (size, size, image.shape[-1]), (0, 1), scale, translation,
                                       method='linear', antialias=True)


def _random_box(key, side, min_scale):
  """torchvision-style RandomResizedCrop box on a square: area fraction in [min_scale, 1], ratio in [3/4, 4/3]."""
  k_area, k_ratio, k_top, k_left = jax.random.split(key, 4)
  area = jax.random.uniform(k_area, (), minval=min_scale, maxval=1.0) * side * side
  log_ratio = jax.random.uniform(k_ratio, (), minval=math.log(3 / 4), maxval=math.log(4 / 3))
  ratio = jnp.exp(log_ratio)
  width = jnp.clip(jnp.sqrt(area * ratio), 1.0, side)
  height = jnp.clip(jnp.sqrt(area / ratio), 1.0, side)
  top = jax.random.uniform(k_top, ()) * (side - height)
  left = jax.random.uniform(k_left, ()) * (side - width)
  return top, left, height, width


def _gray(x):
  return jnp.sum(x * jnp.asarray([0.299, 0.587, 0.114], x.dtype), axis=-1, keepdims=True)


def _color_jitter(key, x, strength):
  """Brightness, contrast and saturation, each by a factor in [1 - strength, 1 + strength]."""
  factors = jax.random.uniform(key, (3,), minval=1 - strength, maxval=1 + strength)
  x = x * factors[0]
  x = (x - jnp.mean(_gray(x))) * factors[1] + jnp.mean(_gray(x))
  x = (x - _gray(x)) * factors[2] + _gray(x)
  return jnp.clip(x, 0.0, 1.0)


def train_transform(images, key, *, image_size, min_scale=0.35, flip=True, color_jitter=0.0, norm='imagenet'):
  """uint8 (B, S, S, 3) -> float32 (B, image_size, image_size, 3), randomly augmented per image."""
  side = images.shape[1]

  def one(image, key):
    k_box, k_flip, k_jitter = jax.random.split(key, 3)
    x = image.astype(jnp.float32) / 255.0
    x = _crop_resize(x, *_random_box(k_box, side, min_scale), image_size)
    if flip:
      x = jnp.where(jax.random.bernoulli(k_flip), x[:, ::-1], x)
    if color_jitter > 0:
      x = _color_jitter(k_jitter, x, color_jitter)
    return jnp.clip(x, 0.0, 1.0)

  x = jax.vmap(one)(images, jax.random.split(key, images.shape[0]))
  return _normalize(x, norm)


def eval_transform(images, *, image_size, norm='imagenet'):
  """uint8 (B, S, S, 3) -> float32 (B, image_size, image_size, 3): the central crop, no resampling."""
  offset = (images.shape[1] - image_size) // 2
  x = images[:, offset:offset + image_size, offset:offset + image_size].astype(jnp.float32) / 255.0
  return _normalize(x, norm)


def flip_transform(images, key, *, image_size, flip=True, norm='symmetric'):
  """The generator's augmentation: the central crop, mirrored left-right at random (no resampling)."""
  x = eval_transform(images, image_size=image_size, norm=norm)
  if not flip:
    return x
  mirrored = jax.random.bernoulli(key, 0.5, (x.shape[0], 1, 1, 1))
  return jnp.where(mirrored, x[:, :, ::-1], x)
