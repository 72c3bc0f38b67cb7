"""A class-conditional DiT (Peebles & Xie, facebookresearch/DiT `models.py`) in Flax NNX.

Same architecture and initialisation as DiT: a patch-embedding conv, a fixed 2-D sin-cos position
embedding, adaLN-Zero blocks and a zero-initialised final layer, so a fresh model predicts exactly zero.
The label table has one extra row, `null_label == num_classes`, for classifier-free guidance. Unlike
DiT, `t` is the raw flow time in [0, 1] (0 noise, 1 data); it is scaled by `time_scale` before the
frequency embedding, which was designed for DiT's integer steps in [0, 1000).

Inputs and outputs are NHWC. Parameters are float32. The per-token matmuls (patch embedding,
attention, MLP) run in `dtype` (bfloat16 by default); the residual stream, LayerNorm, softmax and the
per-sample conditioning path stay in float32, as does the final layer, so the velocity is float32.
"""

from __future__ import annotations

import math

import jax
import jax.numpy as jnp
import numpy as np
from flax import nnx

# DiT's `_basic_init`: xavier-uniform weights and zero biases for every Linear.
_XAVIER = nnx.initializers.xavier_uniform()
_ZEROS = nnx.initializers.zeros_init()
_NORMAL = nnx.initializers.normal(0.02)
# DiT initialises the patch conv as xavier on the kernel flattened to (width, p*p*C); Flax's
# xavier on a conv kernel would multiply both fans by p*p instead.
_PATCH_INIT = nnx.initializers.variance_scaling(1.0, 'fan_avg', 'uniform', in_axis=(0, 1, 2), out_axis=-1)


class PosEmbed(nnx.Variable):
  """A fixed (non-trainable) position embedding: not an `nnx.Param`, so never optimised or decayed."""


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


def _sincos_1d(dim, pos):
  """DiT's `get_1d_sincos_pos_embed_from_grid`: [sin(pos*omega), cos(pos*omega)], float64."""
  omega = 1.0 / 10000 ** (np.arange(dim // 2, dtype=np.float64) / (dim / 2.0))
  out = np.einsum('m,d->md', pos.reshape(-1).astype(np.float64), omega)
  return np.concatenate([np.sin(out), np.cos(out)], axis=1)


def sincos_pos_embed_2d(dim, grid_size):
  """DiT's `get_2d_sincos_pos_embed`: (grid_size**2, dim) float32, tokens row-major over (h, w).

  Follows DiT's axis order exactly: `meshgrid(grid_w, grid_h)` puts the column index in grid[0], so
  the first half of the dims encodes the column (w) and the second half the row (h).
  """
  if dim % 4:
    raise ValueError(f'sin-cos position embedding needs dim divisible by 4, got {dim}')
  grid_h = np.arange(grid_size, dtype=np.float32)
  grid_w = np.arange(grid_size, dtype=np.float32)
  grid = np.stack(np.meshgrid(grid_w, grid_h), axis=0)
  emb = np.concatenate([_sincos_1d(dim // 2, grid[0]), _sincos_1d(dim // 2, grid[1])], axis=1)
  return emb.astype(np.float32)


def timestep_embedding(t, dim=256, max_period=10000):
  """DiT's `TimestepEmbedder.timestep_embedding`: (N,) -> (N, dim) float32, [cos, sin] of t * freqs."""
  half = dim // 2
  freqs = jnp.exp(-math.log(max_period) * jnp.arange(half, dtype=jnp.float32) / half)
  args = jnp.asarray(t, jnp.float32)[:, None] * freqs[None]
  emb = jnp.concatenate([jnp.cos(args), jnp.sin(args)], axis=-1)
  if dim % 2:
    emb = jnp.concatenate([emb, jnp.zeros_like(emb[:, :1])], axis=-1)
  return emb


def modulate(x, shift, scale):
  """adaLN: per-sample shift and scale of (N, T, D) tokens."""
  return x * (1 + scale[:, None]) + shift[:, None]


def _linear(cin, cout, dtype, rngs, *, kernel_init=_XAVIER):
  return nnx.Linear(
    cin, cout, dtype=dtype, param_dtype=jnp.float32, kernel_init=kernel_init, bias_init=_ZEROS, rngs=rngs
  )


def _norm(width, rngs):
  # No affine: adaLN provides the shift and scale. Computed in float32.
  return nnx.LayerNorm(
    width, epsilon=1e-6, use_scale=False, use_bias=False, dtype=jnp.float32, param_dtype=jnp.float32, rngs=rngs
  )


class Attention(nnx.Module):
  """timm's Attention as DiT uses it: one qkv Linear with bias (channels ordered (3, heads, head_dim))."""

  def __init__(self, width, heads, *, dtype, rngs):
    if width % heads:
      raise ValueError(f'width {width} is not divisible by heads {heads}')
    self.heads = heads
    self.dtype = dtype
    self.qkv = _linear(width, 3 * width, dtype, rngs)
    self.proj = _linear(width, width, dtype, rngs)

  def __call__(self, x):
    n, tokens, width = x.shape
    head_dim = width // self.heads
    q, k, v = jnp.moveaxis(self.qkv(x).reshape(n, tokens, 3, self.heads, head_dim), 2, 0)
    logits = jnp.einsum('nqhd,nkhd->nhqk', q, k, preferred_element_type=jnp.float32) / math.sqrt(head_dim)
    weights = jax.nn.softmax(logits, axis=-1).astype(self.dtype)
    out = jnp.einsum('nhqk,nkhd->nqhd', weights, v.astype(self.dtype))
    return self.proj(out.reshape(n, tokens, width))


class Mlp(nnx.Module):
  """Linear -> tanh-approximated GELU -> Linear."""

  def __init__(self, width, hidden, *, dtype, rngs):
    self.fc1 = _linear(width, hidden, dtype, rngs)
    self.fc2 = _linear(hidden, width, dtype, rngs)

  def __call__(self, x):
    return self.fc2(nnx.gelu(self.fc1(x), approximate=True))


class DiTBlock(nnx.Module):
  """adaLN-Zero transformer block: the zero-initialised modulation makes each block start as identity."""

  def __init__(self, width, heads, mlp_ratio, *, dtype, rngs):
    self.norm1 = _norm(width, rngs)
    self.attn = Attention(width, heads, dtype=dtype, rngs=rngs)
    self.norm2 = _norm(width, rngs)
    self.mlp = Mlp(width, int(width * mlp_ratio), dtype=dtype, rngs=rngs)
    # Per-sample, so cheap: float32 keeps the modulation precise.
    self.adaLN_modulation = _linear(width, 6 * width, jnp.float32, rngs, kernel_init=_ZEROS)

  def __call__(self, x, c):
    shift_msa, scale_msa, gate_msa, shift_mlp, scale_mlp, gate_mlp = jnp.split(
      self.adaLN_modulation(nnx.silu(c)), 6, axis=-1
    )
    x = x + gate_msa[:, None] * self.attn(modulate(self.norm1(x), shift_msa, scale_msa)).astype(jnp.float32)
    x = x + gate_mlp[:, None] * self.mlp(modulate(self.norm2(x), shift_mlp, scale_mlp)).astype(jnp.float32)
    return x


class FinalLayer(nnx.Module):
  """adaLN (shift, scale) then a zero-initialised Linear to p*p*C per token, all in float32."""

  def __init__(self, width, out_features, *, rngs):
    self.norm_final = _norm(width, rngs)
    self.adaLN_modulation = _linear(width, 2 * width, jnp.float32, rngs, kernel_init=_ZEROS)
    self.linear = _linear(width, out_features, jnp.float32, rngs, kernel_init=_ZEROS)

  def __call__(self, x, c):
    shift, scale = jnp.split(self.adaLN_modulation(nnx.silu(c)), 2, axis=-1)
    return self.linear(modulate(self.norm_final(x), shift, scale))


class DiT(nnx.Module):
  """Class-conditional DiT predicting a velocity from (x_t NHWC, t in [0, 1], label in [0, num_classes])."""

  def __init__(
    self,
    *,
    image_size=128,
    patch_size=16,
    channels=3,
    width=384,
    depth=12,
    heads=6,
    mlp_ratio=4.0,
    num_classes=13,
    time_scale=1000.0,
    dtype=jnp.bfloat16,
    rngs: nnx.Rngs,
  ):
    if image_size % patch_size:
      raise ValueError(f'image_size {image_size} is not divisible by patch_size {patch_size}')
    self.image_size = image_size
    self.patch_size = patch_size
    self.channels = channels
    self.width = width
    self.num_classes = num_classes
    self.null_label = num_classes
    self.time_scale = time_scale
    self.dtype = dtype
    grid = image_size // patch_size
    # A VALID conv with kernel = stride = p is a Linear on `patchify` tokens (same (py, px, c) order).
    self.x_embedder = nnx.Conv(
      channels,
      width,
      (patch_size, patch_size),
      strides=(patch_size, patch_size),
      padding='VALID',
      dtype=dtype,
      param_dtype=jnp.float32,
      kernel_init=_PATCH_INIT,
      bias_init=_ZEROS,
      rngs=rngs,
    )
    self.pos_embed = PosEmbed(jnp.asarray(sincos_pos_embed_2d(width, grid)))
    self.t_embedder = nnx.List(
      [
        _linear(256, width, jnp.float32, rngs, kernel_init=_NORMAL),
        _linear(width, width, jnp.float32, rngs, kernel_init=_NORMAL),
      ]
    )
    self.label_embed = nnx.Embed(
      num_classes + 1, width, dtype=jnp.float32, param_dtype=jnp.float32, embedding_init=_NORMAL, rngs=rngs
    )
    self.blocks = nnx.List([DiTBlock(width, heads, mlp_ratio, dtype=dtype, rngs=rngs) for _ in range(depth)])
    self.final_layer = FinalLayer(width, patch_size * patch_size * channels, rngs=rngs)

  def __call__(self, x, t, y):
    """Velocity (N, H, W, C) float32 for x (N, H, W, C), t (N,) float, y (N,) int (num_classes = null)."""
    n, h, w, c = x.shape
    tokens = self.x_embedder(x.astype(self.dtype)).reshape(n, -1, self.width).astype(jnp.float32)
    tokens = tokens + self.pos_embed[...]
    fc1, fc2 = self.t_embedder
    t_emb = fc2(nnx.silu(fc1(timestep_embedding(t * self.time_scale, 256))))
    cond = t_emb + self.label_embed(y)
    for block in self.blocks:
      tokens = block(tokens, cond)
    out = self.final_layer(tokens, cond)
    return unpatchify(out, self.patch_size, h, w, c).astype(jnp.float32)
