"""A class-conditional DiT (Peebles & Xie, facebookresearch/DiT `models.py`) in Flax NNX.

Same architecture and initialisation as DiT: a patch-embedding conv, a fixed 2-D sin-cos position
embedding, adaLN-Zero blocks and a zero-initialised final layer, so a fresh model predicts exactly zero.
The label table has one extra row, `null_label == num_classes`, for classifier-free guidance. Unlike
DiT, `t` is the raw flow time in [0, 1] (0 noise, 1 data); it is scaled by `time_scale` before the
frequency embedding, which was designed for DiT's integer steps in [0, 1000).

Options from later work (each a `model.*` / `flow.prediction` field; the defaults reproduce DiT): RMSNorm for
LayerNorm, RMS-normalised queries and keys, a SwiGLU MLP, 2-D rotary position embedding in attention, a bottleneck
patch embedding (patch values -> `bottleneck` -> width) and in-context class tokens (LightningDiT, arXiv
2501.01423; JiT, arXiv 2511.13720, `model_jit.py`); and output tiles that reach `overlap` pixels past their
patch and are cross-faded with their neighbours' (`patches.overlap_add`), so that the patch grid does not show.
With `prediction='x'` the network predicts the clean image x̂ and the forward returns the velocity
(x̂ - x_t) / max(1 - t, t_eps), so every caller (the loss, the samplers, the ONNX export) still sees a velocity
(JiT: a pixel transformer with large patches can predict the clean image, which lies on a low-dimensional
manifold, but not the noisy velocity).

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

from tinycats.models.patches import overlap_add

# DiT's `_basic_init`: xavier-uniform weights and zero biases for every Linear.
_XAVIER = nnx.initializers.xavier_uniform()
_ZEROS = nnx.initializers.zeros_init()
_NORMAL = nnx.initializers.normal(0.02)
# DiT initialises the patch conv as xavier on the kernel flattened to (width, p*p*C); Flax's
# xavier on a conv kernel would multiply both fans by p*p instead.
_PATCH_INIT = nnx.initializers.variance_scaling(1.0, 'fan_avg', 'uniform', in_axis=(0, 1, 2), out_axis=-1)


class PosEmbed(nnx.Variable):
  """A fixed (non-trainable) position embedding: not an `nnx.Param`, so never optimised or decayed."""


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


class RMSNorm(nnx.Module):
  """x / rms(x) * scale over the last axis, in float32 (written out so that it exports to ONNX as plain ops)."""

  def __init__(self, width, *, use_scale=True, epsilon=1e-6):
    self.epsilon = epsilon
    self.scale = nnx.Param(jnp.ones((width,), jnp.float32)) if use_scale else None

  def __call__(self, x):
    x = x.astype(jnp.float32)
    x = x * jax.lax.rsqrt(jnp.mean(jnp.square(x), axis=-1, keepdims=True) + self.epsilon)
    return x if self.scale is None else x * self.scale[...]


NORMS = ('layernorm', 'rmsnorm')
MLPS = ('gelu', 'swiglu')
PREDICTIONS = ('v', 'x')


def _norm(width, rngs, kind='layernorm'):
  # No affine for LayerNorm: adaLN provides the shift and scale (DiT). RMSNorm keeps its scale (JiT). float32.
  if kind == 'rmsnorm':
    return RMSNorm(width)
  if kind != 'layernorm':
    raise ValueError(f'unknown norm {kind!r}; choose one of {NORMS}')
  return nnx.LayerNorm(
    width, epsilon=1e-6, use_scale=False, use_bias=False, dtype=jnp.float32, param_dtype=jnp.float32, rngs=rngs
  )


def rope_tables(head_dim: int, grid: int, prefix: int = 0, theta: float = 10000.0) -> tuple[np.ndarray, np.ndarray]:
  """(cos, sin), each (prefix + grid**2, head_dim) float32, for 2-D rotary embedding of row-major patch tokens.

  The first half of each head rotates by the token's row, the second half by its column, each half in
  `rotate_half` pairs (i, i + quarter) at frequencies theta ** (-2i / half) (as a 1-D RoPE of half the size).
  The `prefix` tokens (in-context class tokens) are not rotated: cos 1, sin 0.
  """
  if head_dim % 4:
    raise ValueError(f'2-D rotary embedding needs a head width divisible by 4, got {head_dim}')
  half = head_dim // 2
  freqs = 1.0 / theta ** (np.arange(0, half, 2, dtype=np.float64) / half)  # (half / 2,)
  rows, cols = np.divmod(np.arange(grid * grid, dtype=np.float64), grid)
  angles = [np.outer(pos, freqs) for pos in (rows, cols)]  # Each (tokens, half / 2).
  angles = np.concatenate([np.concatenate([a, a], axis=1) for a in angles], axis=1)  # (tokens, head_dim)
  cos = np.concatenate([np.ones((prefix, head_dim)), np.cos(angles)]).astype(np.float32)
  sin = np.concatenate([np.zeros((prefix, head_dim)), np.sin(angles)]).astype(np.float32)
  return cos, sin


def apply_rope(x, cos, sin):
  """Rotates (N, T, heads, head_dim) by the tables (T, head_dim): per half, pairs (i, i + quarter)."""
  quarter = x.shape[-1] // 4
  parts = [x[..., i * quarter : (i + 1) * quarter] for i in range(4)]
  rotated = jnp.concatenate([-parts[1], parts[0], -parts[3], parts[2]], axis=-1)
  return x * cos[:, None] + rotated * sin[:, None]


class Attention(nnx.Module):
  """timm's Attention as DiT uses it: one qkv Linear with bias (channels ordered (3, heads, head_dim)).

  `qk_norm`: queries and keys RMS-normalised per head (with a learnt scale) before the product, which keeps
  the attention logits bounded at high learning rates. `rope` (cos, sin tables) rotates them by position.
  """

  def __init__(self, width, heads, *, dtype, rngs, qk_norm=False):
    if width % heads:
      raise ValueError(f'width {width} is not divisible by heads {heads}')
    self.heads = heads
    self.dtype = dtype
    self.qkv = _linear(width, 3 * width, dtype, rngs)
    self.proj = _linear(width, width, dtype, rngs)
    self.q_norm = RMSNorm(width // heads) if qk_norm else None
    self.k_norm = RMSNorm(width // heads) if qk_norm else None

  def __call__(self, x, rope=None):
    n, tokens, width = x.shape
    head_dim = width // self.heads
    q, k, v = jnp.moveaxis(self.qkv(x).reshape(n, tokens, 3, self.heads, head_dim), 2, 0)
    if self.q_norm is not None:
      q, k = self.q_norm(q).astype(self.dtype), self.k_norm(k).astype(self.dtype)
    if rope is not None:
      q, k = (apply_rope(a.astype(jnp.float32), *rope).astype(self.dtype) for a in (q, k))
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


class SwiGLU(nnx.Module):
  """silu(x W1) * (x W2) -> W3, with 2/3 of the hidden width so that it costs what the GELU MLP costs."""

  def __init__(self, width, hidden, *, dtype, rngs):
    hidden = int(hidden * 2 / 3)
    self.fc1 = _linear(width, 2 * hidden, dtype, rngs)
    self.fc2 = _linear(hidden, width, dtype, rngs)

  def __call__(self, x):
    gate, value = jnp.split(self.fc1(x), 2, axis=-1)
    return self.fc2(nnx.silu(gate) * value)


class DiTBlock(nnx.Module):
  """adaLN-Zero transformer block: the zero-initialised modulation makes each block start as identity."""

  def __init__(self, width, heads, mlp_ratio, *, dtype, rngs, norm='layernorm', qk_norm=False, mlp='gelu'):
    if mlp not in MLPS:
      raise ValueError(f'unknown mlp {mlp!r}; choose one of {MLPS}')
    self.norm1 = _norm(width, rngs, norm)
    self.attn = Attention(width, heads, dtype=dtype, rngs=rngs, qk_norm=qk_norm)
    self.norm2 = _norm(width, rngs, norm)
    self.mlp = (SwiGLU if mlp == 'swiglu' else Mlp)(width, int(width * mlp_ratio), dtype=dtype, rngs=rngs)
    # Per-sample, so cheap: float32 keeps the modulation precise.
    self.adaLN_modulation = _linear(width, 6 * width, jnp.float32, rngs, kernel_init=_ZEROS)

  def __call__(self, x, c, rope=None):
    shift_msa, scale_msa, gate_msa, shift_mlp, scale_mlp, gate_mlp = jnp.split(
      self.adaLN_modulation(nnx.silu(c)), 6, axis=-1
    )
    attn = self.attn(modulate(self.norm1(x), shift_msa, scale_msa), rope)
    x = x + gate_msa[:, None] * attn.astype(jnp.float32)
    x = x + gate_mlp[:, None] * self.mlp(modulate(self.norm2(x), shift_mlp, scale_mlp)).astype(jnp.float32)
    return x


class FinalLayer(nnx.Module):
  """adaLN (shift, scale) then a zero-initialised Linear to p*p*C per token, all in float32."""

  def __init__(self, width, out_features, *, rngs, norm='layernorm'):
    self.norm_final = _norm(width, rngs, norm)
    self.adaLN_modulation = _linear(width, 2 * width, jnp.float32, rngs, kernel_init=_ZEROS)
    self.linear = _linear(width, out_features, jnp.float32, rngs, kernel_init=_ZEROS)

  def __call__(self, x, c):
    shift, scale = jnp.split(self.adaLN_modulation(nnx.silu(c)), 2, axis=-1)
    return self.linear(modulate(self.norm_final(x), shift, scale))


class DiT(nnx.Module):
  """Class-conditional DiT predicting a velocity from (x_t NHWC, t in [0, 1], label in [0, num_classes]).

  `prediction` 'v': the network's output is the velocity; 'x': it is the clean image, turned into the
  velocity here (`t_eps` bounds 1 / (1 - t) near the data end, as JiT does).
  """

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
    norm='layernorm',
    qk_norm=False,
    mlp='gelu',
    rope=False,
    bottleneck=0,
    class_tokens=0,
    class_token_block=0,
    overlap=0,
    prediction='v',
    t_eps=0.05,
    dtype=jnp.bfloat16,
    rngs: nnx.Rngs,
  ):
    if image_size % patch_size:
      raise ValueError(f'image_size {image_size} is not divisible by patch_size {patch_size}')
    if prediction not in PREDICTIONS:
      raise ValueError(f'unknown prediction {prediction!r}; choose one of {PREDICTIONS}')
    if not 0 <= class_token_block < max(depth, 1):
      raise ValueError(f'class_token_block {class_token_block} must name a block, 0-{depth - 1}')
    if not 0 <= 2 * overlap <= patch_size:
      raise ValueError(f'overlap {overlap} must be between 0 and half the patch size {patch_size}')
    # Kept as attributes: the forward pass, inference and the ONNX export read them (a plain list, by design).
    self.image_size = image_size
    self.patch_size = patch_size
    self.channels = channels
    self.width = width
    self.num_classes = num_classes
    self.null_label = num_classes
    self.time_scale = time_scale
    self.prediction = prediction
    self.t_eps = t_eps
    self.class_tokens = class_tokens
    self.class_token_block = class_token_block
    self.overlap = overlap
    self.dtype = dtype
    grid = image_size // patch_size
    # A VALID conv with kernel = stride = p is a Linear on `patches.patchify` tokens (same (py, px, c) order). With a
    # bottleneck it maps to `bottleneck` values (no bias), then a Linear to the width (JiT's BottleneckPatchEmbed).
    self.x_embedder = nnx.Conv(
      channels,
      bottleneck or width,
      (patch_size, patch_size),
      strides=(patch_size, patch_size),
      padding='VALID',
      use_bias=not bottleneck,
      dtype=dtype,
      param_dtype=jnp.float32,
      kernel_init=_PATCH_INIT,
      bias_init=_ZEROS,
      rngs=rngs,
    )
    self.x_bottleneck = _linear(bottleneck, width, dtype, rngs) if bottleneck else None
    self.pos_embed = PosEmbed(jnp.asarray(sincos_pos_embed_2d(width, grid)))
    self.rope = rope  # Tables made at trace time (constants): no state, nothing to checkpoint.
    self.head_dim = width // heads
    self.grid = grid
    self.t_embedder = nnx.List(
      [
        _linear(256, width, jnp.float32, rngs, kernel_init=_NORMAL),
        _linear(width, width, jnp.float32, rngs, kernel_init=_NORMAL),
      ]
    )
    self.label_embed = nnx.Embed(
      num_classes + 1, width, dtype=jnp.float32, param_dtype=jnp.float32, embedding_init=_NORMAL, rngs=rngs
    )
    # In-context class tokens: the label embedding, repeated, plus a learnt position per token, put in front
    # of the patch tokens from block `class_token_block` on and dropped before the final layer (JiT).
    self.class_token_pos = nnx.Param(_NORMAL(rngs.params(), (class_tokens, width))) if class_tokens else None
    self.blocks = nnx.List(
      [
        DiTBlock(width, heads, mlp_ratio, dtype=dtype, rngs=rngs, norm=norm, qk_norm=qk_norm, mlp=mlp)
        for _ in range(depth)
      ]
    )
    tile = patch_size + 2 * overlap  # Each token draws a tile this wide, centred on its patch (`patches.overlap_add`).
    self.final_layer = FinalLayer(width, tile * tile * channels, rngs=rngs, norm=norm)

  def __call__(self, x, t, y):
    """Velocity (N, H, W, C) float32 for x (N, H, W, C), t (N,) float, y (N,) int (num_classes = null)."""
    n, h, w, c = x.shape
    tokens = self.x_embedder(x.astype(self.dtype)).reshape(n, (h // self.patch_size) * (w // self.patch_size), -1)
    if self.x_bottleneck is not None:
      tokens = self.x_bottleneck(tokens)
    tokens = tokens.astype(jnp.float32) + self.pos_embed[...]
    fc1, fc2 = self.t_embedder
    t_emb = fc2(nnx.silu(fc1(timestep_embedding(t * self.time_scale, 256))))
    y_emb = self.label_embed(y)
    cond = t_emb + y_emb
    k = self.class_tokens
    rope_all = tuple(jnp.asarray(a) for a in rope_tables(self.head_dim, self.grid, k)) if self.rope else None
    rope_patches = None if rope_all is None else tuple(a[k:] for a in rope_all)
    for i, block in enumerate(self.blocks):
      if k and i == self.class_token_block:
        tokens = jnp.concatenate([y_emb[:, None] + self.class_token_pos[...], tokens], axis=1)
      in_context = k and i >= self.class_token_block
      tokens = block(tokens, cond, rope_all if in_context else rope_patches)
    if k:
      tokens = tokens[:, k:]
    out = overlap_add(self.final_layer(tokens, cond), self.patch_size, self.overlap, h, w, c).astype(jnp.float32)
    if self.prediction == 'x':
      gap = jnp.maximum(1.0 - jnp.asarray(t, jnp.float32), self.t_eps).reshape(-1, 1, 1, 1)
      return (out - x.astype(jnp.float32)) / gap
    return out
