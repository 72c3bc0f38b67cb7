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

IMAGENET_MEAN = (0.485, 0.456, 0.406)
IMAGENET_STD = (0.229, 0.224, 0.225)


def normalization(name: str) -> tuple[tuple[float, ...], tuple[float, ...]]:
  """(mean, std) applied to pixels in [0, 1]: 'imagenet', or 'none' (pixels stay in [0, 1])."""
  return (IMAGENET_MEAN, IMAGENET_STD) if name == 'imagenet' else ((0.0, 0.0, 0.0), (1.0, 1.0, 1.0))


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
