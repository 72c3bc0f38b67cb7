"""Pixels to tokens and back: a DiT's patch grid, and its output tiles.

`patchify`/`unpatchify` cut an image into non-overlapping p x p patches, one token each, and put them back.
`overlap_add` puts back tiles that reach `overlap` pixels past their patch, cross-faded with their neighbours'
(`crossfade_window`), so that tokens that disagree meet in a ramp rather than a step at the patch border.
"""

from __future__ import annotations

import jax
import jax.numpy as jnp
import numpy as np


def patchify(x, patch_size):
  """(N, H, W, C) -> (N, (H/p)*(W/p), p*p*C); tokens row-major over the patch grid, each (py, px, c)."""
  n, h, w, c = x.shape
  p = patch_size
  if h % p or w % p:
    raise ValueError(f'image size {h}x{w} is not divisible by patch size {p}')
  x = x.reshape(n, h // p, p, w // p, p, c).transpose(0, 1, 3, 2, 4, 5)
  return x.reshape(n, (h // p) * (w // p), p * p * c)


def unpatchify(tokens, patch_size, height, width, channels):
  """The exact inverse of `patchify`: (N, (H/p)*(W/p), p*p*C) -> (N, H, W, C)."""
  p = patch_size
  n = tokens.shape[0]
  x = tokens.reshape(n, height // p, width // p, p, p, channels).transpose(0, 1, 3, 2, 4, 5)
  return x.reshape(n, height, width, channels)


def crossfade_window(patch_size: int, overlap: int) -> np.ndarray:
  """(p + 2o,) weights of an output tile that reaches `overlap` pixels past its patch on each side: linear
  ramps over the 2o pixels two neighbouring tiles share, summing to 1 there, and 1 in between."""
  ramp = (np.arange(2 * overlap) + 0.5) / (2 * overlap)
  return np.concatenate([ramp, np.ones(patch_size - 2 * overlap), ramp[::-1]]).astype(np.float32)


def _fold(x, patch_size: int, overlap: int, axis: int):
  """Overlap-add of tiles along `axis` (G tiles) and `axis + 1` (p + 2o pixels each), tile i starting at pixel
  p*i - o: those two axes become one of G*p pixels. Tile i's last 2o pixels are added to tile i+1's first 2o."""
  p, o = patch_size, overlap
  take = lambda start, stop: jax.lax.slice_in_dim(x, start, stop, axis=axis + 1)
  head, body, tail = take(0, 2 * o), take(2 * o, p), take(p, p + 2 * o)
  shifted = jax.lax.slice_in_dim(tail, 0, x.shape[axis] - 1, axis=axis)
  zeros = jnp.zeros_like(jax.lax.slice_in_dim(tail, 0, 1, axis=axis))
  previous_tail = jnp.concatenate([zeros, shifted], axis=axis)
  hops = jnp.concatenate([head + previous_tail, body], axis=axis + 1)  # Tile i's pixels p*i - o ... p*i + p - o.
  shape = hops.shape[:axis] + (hops.shape[axis] * p,) + hops.shape[axis + 2 :]
  last = jax.lax.slice_in_dim(tail, x.shape[axis] - 1, x.shape[axis], axis=axis)
  canvas = jnp.concatenate(
    [hops.reshape(shape), last.reshape(last.shape[:axis] + (2 * o,) + last.shape[axis + 2 :])], axis=axis
  )
  return jax.lax.slice_in_dim(canvas, o, o + shape[axis], axis=axis)


def overlap_add(tokens, patch_size, overlap, height, width, channels):
  """(N, (H/p)*(W/p), (p+2o)^2*C) -> (N, H, W, C): each token's tile, (p + 2o) pixels square and centred on its
  patch, cross-faded with its neighbours' (`crossfade_window`); where a tile has no neighbour (the image's
  border) its weights are renormalised. Neighbouring tiles that disagree then meet in a ramp, not a step: the
  patch blocks of a per-patch Linear. `overlap` 0 is `unpatchify`."""
  if not overlap:
    return unpatchify(tokens, patch_size, height, width, channels)
  p, o = patch_size, overlap
  n, k = tokens.shape[0], p + 2 * o
  window = crossfade_window(p, o)
  x = tokens.reshape(n, height // p, width // p, k, k, channels).transpose(0, 1, 3, 2, 4, 5)  # (N, H/p, k, W/p, k, C)
  x = x * (window[:, None, None, None] * window[None, None, :, None])
  x = _fold(_fold(x, p, o, axis=1), p, o, axis=2)  # Rows, then columns: (N, H, W, C).
  edge = window[o : 2 * o]  # The first o pixels of the image see only the first tile's ramp: renormalised.
  rows, cols = (np.concatenate([edge, np.ones(size - 2 * o, np.float32), edge[::-1]]) for size in (height, width))
  return x / np.outer(rows, cols)[None, :, :, None]
