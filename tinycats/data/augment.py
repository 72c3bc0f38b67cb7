"""Jittable image transforms on the cache's uint8 canvases: they run inside the train step, on the device.

The cache keeps each whole picture, its longer side resized to the cache size, at the top-left of
a square canvas, and `sizes` (B, 2) says how much of each canvas is picture. The transforms read
only that part: a resampling tap on the padding gets no weight, so an image gives the same pixels
whatever canvas it sits in.

`train_transform` is torchvision's RandomResizedCrop of the whole picture + horizontal flip +
colour jitter. `eval_transform` is the one evaluation policy: the central square of side
`crop_fraction` x the shorter side, resized to `image_size` (0.875 is torchvision's Resize(256) +
CenterCrop(224)); `flip_transform`, the generator's data, is that square mirrored at random. All
end with the configured normalisation, so training, evaluation, prediction and export agree.
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


def eval_crop(data) -> float:
  """A config's `data.eval_crop`. Workdirs and exports from before the field cropped the central
  `image_size` of a `cache_size` square cut from the shorter side: that same fraction of it."""
  return float(data.get('eval_crop', data.image_size / data.cache_size))


def _axis_weights(start, length, valid, in_size: int, out_size: int):
  """(out_size, in_size) weights taking [start, start + length) of an axis to `out_size` pixels.

  Antialiased linear, as `jax.image.scale_and_translate` computes them, except that the picture
  ends at `valid`: taps beyond it get no weight and the rest are renormalised, as at an image's edge.
  """
  inv_scale = length / out_size
  centres = start + (jnp.arange(out_size, dtype=jnp.float32) + 0.5) * inv_scale - 0.5
  pixels = jnp.arange(in_size, dtype=jnp.float32)
  weights = jnp.maximum(0.0, 1.0 - jnp.abs(centres[:, None] - pixels[None]) / jnp.maximum(inv_scale, 1.0))
  weights = jnp.where(pixels[None] < valid, weights, 0.0)
  return weights / jnp.maximum(jnp.sum(weights, axis=1, keepdims=True), 1e-12)


def _crop_resize(image, top, left, height, width, size, valid=None):
  """Crops the box (floats, pixels) from one HWC image and resizes it to size x size (antialiased).

  `valid` (h, w) is the picture at the top-left of the canvas (default: all of it); the padding
  beyond it never reaches the output.
  """
  h, w = valid if valid is not None else image.shape[:2]
  rows = _axis_weights(top, height, h, image.shape[0], size)
  cols = _axis_weights(left, width, w, image.shape[1], size)
  return jnp.einsum('yh,hwc,xw->yxc', rows, image, cols, precision=jax.lax.Precision.HIGHEST)


def _random_box(key, height, width, min_scale):
  """torchvision-style RandomResizedCrop box in a height x width picture: area fraction in [min_scale, 1],
  aspect ratio log-uniform in [3/4, 4/3], clipped to the picture, position uniform."""
  k_area, k_ratio, k_top, k_left = jax.random.split(key, 4)
  area = jax.random.uniform(k_area, (), minval=min_scale, maxval=1.0) * height * width
  log_ratio = jax.random.uniform(k_ratio, (), minval=math.log(3 / 4), maxval=math.log(4 / 3))
  ratio = jnp.exp(log_ratio)
  box_width = jnp.clip(jnp.sqrt(area * ratio), 1.0, width)
  box_height = jnp.clip(jnp.sqrt(area / ratio), 1.0, height)
  top = jax.random.uniform(k_top, ()) * (height - box_height)
  left = jax.random.uniform(k_left, ()) * (width - box_width)
  return top, left, box_height, box_width


def _center_square(height, width, crop_fraction):
  """The evaluation box: the central square of side `crop_fraction` x the shorter side."""
  side = crop_fraction * jnp.minimum(height, width)
  return (height - side) / 2, (width - side) / 2, side, side


def _valid(sizes):
  """(B, 2) float32 picture sizes, at least 1 (the zero rows that pad a last batch stay finite)."""
  return jnp.maximum(jnp.asarray(sizes, jnp.float32), 1.0)


def _gray(x):
  return jnp.sum(x * jnp.asarray([0.299, 0.587, 0.114], x.dtype), axis=-1, keepdims=True)


def _color_jitter(key, x, strength):
  """Brightness, contrast and saturation, each by a factor in [1 - strength, 1 + strength]."""
  factors = jax.random.uniform(key, (3,), minval=1 - strength, maxval=1 + strength)
  x = x * factors[0]
  x = (x - jnp.mean(_gray(x))) * factors[1] + jnp.mean(_gray(x))
  x = (x - _gray(x)) * factors[2] + _gray(x)
  return jnp.clip(x, 0.0, 1.0)


def _recolor(key, x, probability):
  """With `probability`, the picture's RGB channels in a random order and, half of those times, inverted.

  A network trained from scratch on few pictures memorises their colours long before it learns
  their shapes; scrambled colours leave it only the shapes (and a grey picture only its polarity).
  """
  k_apply, k_order, k_invert = jax.random.split(key, 3)
  scrambled = x[..., jax.random.permutation(k_order, 3)]
  scrambled = jnp.where(jax.random.bernoulli(k_invert), 1.0 - scrambled, scrambled)
  return jnp.where(jax.random.bernoulli(k_apply, probability), scrambled, x)


def train_transform(
  images, sizes, key, *, image_size, min_scale=0.35, flip=True, color_jitter=0.0, recolor=0.0, norm='imagenet'
):
  """uint8 canvases (B, S, S, 3) with picture sizes (B, 2) -> float32 (B, image_size, image_size, 3),
  randomly augmented per image; the crop may come from anywhere in the picture."""

  def one(image, size, key):
    k_box, k_flip, k_jitter, k_recolor = jax.random.split(key, 4)
    x = image.astype(jnp.float32) / 255.0
    x = _crop_resize(x, *_random_box(k_box, size[0], size[1], min_scale), image_size, size)
    if flip:
      x = jnp.where(jax.random.bernoulli(k_flip), x[:, ::-1], x)
    if color_jitter > 0:
      x = _color_jitter(k_jitter, x, color_jitter)
    if recolor > 0:
      x = _recolor(k_recolor, x, recolor)
    return jnp.clip(x, 0.0, 1.0)

  x = jax.vmap(one)(images, _valid(sizes), jax.random.split(key, images.shape[0]))
  return _normalize(x, norm)


def eval_transform(images, sizes, *, image_size, crop_fraction, norm='imagenet'):
  """uint8 canvases (B, S, S, 3) with picture sizes (B, 2) -> float32 (B, image_size, image_size, 3):
  the central square of `crop_fraction` x the shorter side, resized (antialiased linear)."""

  def one(image, size):
    box = _center_square(size[0], size[1], crop_fraction)
    return _crop_resize(image.astype(jnp.float32) / 255.0, *box, image_size, size)

  return _normalize(jax.vmap(one)(images, _valid(sizes)), norm)


def flip_transform(images, sizes, key, *, image_size, crop_fraction, flip=True, norm='symmetric'):
  """The generator's data: the evaluation crop, mirrored left-right at random."""
  x = eval_transform(images, sizes, image_size=image_size, crop_fraction=crop_fraction, norm=norm)
  if not flip:
    return x
  mirrored = jax.random.bernoulli(key, 0.5, (x.shape[0], 1, 1, 1))
  return jnp.where(mirrored, x[:, :, ::-1], x)
