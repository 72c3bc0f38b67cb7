import functools
import math

import jax
import jax.numpy as jnp
import numpy as np
import pytest
from flax import nnx

from tinycats.models import dit, patches
from tinycats.models.dit import DiT

TINY = dict(image_size=16, patch_size=4, width=32, depth=2, heads=2, num_classes=3)


def _count(module):
  return sum(v.size for v in jax.tree.leaves(nnx.state(module, nnx.Param)))


def _tiny(dtype=jnp.float32, seed=0, **overrides):
  return DiT(**{**TINY, **overrides}, dtype=dtype, rngs=nnx.Rngs(seed))


# Test data comes from NumPy: on CPU each new shape of an eager jax.random call compiles for seconds.
def _normal(shape, seed):
  return np.random.default_rng(seed).standard_normal(shape).astype(np.float32)


@functools.cache
def _cached(dtype=jnp.float32, perturbed=False):
  """Shared tiny models (never mutated by the tests): eager construction and forwards are slow on CPU."""
  return _perturb(_cached(dtype)) if perturbed else _tiny(dtype)


# One compilation per model structure and input shape; every test uses `_inputs()`'s shapes.
_forward = nnx.jit(lambda model, x, t, y: model(x, t, y))


def _perturb(model, seed=1, scale=0.1):
  """Adds noise to every parameter, so the zero-initialised layers (adaLN, final linear) do something."""
  graphdef, params, rest = nnx.split(model, nnx.Param, ...)
  leaves, treedef = jax.tree.flatten(params)
  leaves = [p + scale * _normal(p.shape, seed + i) for i, p in enumerate(leaves)]
  return nnx.merge(graphdef, jax.tree.unflatten(treedef, leaves), rest)


def _inputs(n=4, size=16, channels=3, seed=2):
  x = jnp.asarray(_normal((n, size, size, channels), seed))
  t = jnp.asarray(np.random.default_rng(seed + 1).uniform(size=n).astype(np.float32))
  return x, t, jnp.arange(n) % 4


@pytest.mark.parametrize('channels', [1, 3, 5])
def test_unpatchify_inverts_patchify(channels):
  x = jnp.asarray(_normal((2, 12, 8, channels), 0))
  tokens = patches.patchify(x, 4)
  assert tokens.shape == (2, 6, 16 * channels)
  np.testing.assert_array_equal(patches.unpatchify(tokens, 4, 12, 8, channels), x)


def test_patchify_token_order():
  """Token 0 is the top-left block, token 1 its right neighbour; within a token the order is (py, px, c)."""
  x = np.arange(1 * 4 * 6 * 2, dtype=np.float32).reshape(1, 4, 6, 2)
  tokens = np.asarray(patches.patchify(x, 2))
  assert tokens.shape == (1, 6, 8)
  expected0 = [
    x[0, 0, 0, 0],
    x[0, 0, 0, 1],
    x[0, 0, 1, 0],
    x[0, 0, 1, 1],
    x[0, 1, 0, 0],
    x[0, 1, 0, 1],
    x[0, 1, 1, 0],
    x[0, 1, 1, 1],
  ]
  np.testing.assert_array_equal(tokens[0, 0], expected0)
  np.testing.assert_array_equal(tokens[0, 1], x[0, 0:2, 2:4].reshape(-1))
  np.testing.assert_array_equal(tokens[0, 3], x[0, 2:4, 0:2].reshape(-1))


def test_patch_embedding_is_a_linear_on_patchify_tokens():
  model = _cached()
  x, _, _ = _inputs()
  kernel, bias = model.x_embedder.kernel[...], model.x_embedder.bias[...]
  expected = patches.patchify(x, 4) @ kernel.reshape(-1, 32) + bias
  np.testing.assert_allclose(model.x_embedder(x).reshape(4, 16, 32), expected, atol=1e-5)
  # DiT's xavier on the kernel flattened to (p*p*C, width): bound sqrt(6 / (48 + 32)).
  bound = math.sqrt(6 / (4 * 4 * 3 + 32))
  assert 0.9 * bound < float(jnp.abs(kernel).max()) <= bound


def test_pos_embed_hand_computed_small_case():
  """dim 4: omega = [1]; the first half encodes the column (DiT's meshgrid(grid_w, grid_h)), the second the row."""
  s, c = math.sin(1.0), math.cos(1.0)
  expected = np.array(
    [
      [0, 1, 0, 1],  # (row 0, col 0)
      [s, c, 0, 1],  # (row 0, col 1)
      [0, 1, s, c],  # (row 1, col 0)
      [s, c, s, c],
    ],  # (row 1, col 1)
    np.float32,
  )
  got = dit.sincos_pos_embed_2d(4, 2)
  assert got.dtype == np.float32
  np.testing.assert_allclose(got, expected, atol=1e-7)


def test_pos_embed_matches_scalar_formula():
  dim, grid = 8, 3
  quarter = dim // 4
  got = dit.sincos_pos_embed_2d(dim, grid)
  for row in range(grid):
    for col in range(grid):
      expected = []
      for pos in (col, row):
        omegas = [1 / 10000 ** (i / quarter) for i in range(quarter)]
        expected += [math.sin(pos * w) for w in omegas] + [math.cos(pos * w) for w in omegas]
      np.testing.assert_allclose(got[row * grid + col], expected, atol=1e-6)
  with pytest.raises(ValueError):
    dit.sincos_pos_embed_2d(6, 2)


def test_timestep_embedding_values():
  emb = np.asarray(dit.timestep_embedding(jnp.array([0.0, 3.0, 250.5]), dim=4))
  assert emb.shape == (3, 4) and emb.dtype == np.float32
  for row, t in zip(emb, (0.0, 3.0, 250.5)):
    f = math.exp(-math.log(10000) / 2)  # freqs = [1, 0.01]
    np.testing.assert_allclose(row, [math.cos(t), math.cos(t * f), math.sin(t), math.sin(t * f)], atol=1e-4)
  assert dit.timestep_embedding(jnp.zeros(2)).shape == (2, 256)


@pytest.mark.parametrize('dtype', [jnp.float32, jnp.bfloat16])
def test_output_shape_and_dtype(dtype):
  x, t, y = _inputs()
  out = _forward(_cached(dtype), x, t, y)
  assert out.shape == x.shape and out.dtype == jnp.float32


def test_fresh_model_outputs_exact_zeros():
  x, t, y = _inputs()
  for dtype in (jnp.float32, jnp.bfloat16):
    np.testing.assert_array_equal(_forward(_cached(dtype), x, t, y), np.zeros(x.shape, np.float32))


def test_labels_change_the_output_and_null_label_is_accepted():
  model = _cached(perturbed=True)
  assert model.null_label == model.num_classes == 3
  assert model.label_embed.embedding[...].shape == (4, 32)
  x, t, _ = _inputs()
  x, t = jnp.repeat(x[:1], 4, axis=0), jnp.repeat(t[:1], 4)
  outs = np.asarray(_forward(model, x, t, jnp.arange(4)))  # Labels 0, 1, 2 and the null label 3.
  assert np.all(np.isfinite(outs))
  for a in range(4):
    for b in range(a + 1, 4):
      assert np.abs(outs[a] - outs[b]).max() > 1e-4, (a, b)
  # Time matters too.
  later = np.asarray(_forward(model, x, t + jnp.array([0.0, 0.3, 0.0, 0.0]), jnp.zeros(4, jnp.int32)))
  np.testing.assert_array_equal(later[0], later[2])
  assert np.abs(later[1] - later[0]).max() > 1e-4


def test_bf16_compute_is_close_to_f32():
  x, t, y = _inputs()
  f32 = _forward(_cached(jnp.float32, True), x, t, y)
  bf16 = _forward(_cached(jnp.bfloat16, True), x, t, y)
  assert float(jnp.abs(f32).mean()) > 0.1
  np.testing.assert_allclose(bf16, f32, atol=0.05 * float(jnp.abs(f32).max()))


def test_pos_embed_is_fixed_not_a_param():
  model = _cached()
  assert not isinstance(model.pos_embed, nnx.Param)
  param_paths = {p for p, _ in nnx.to_flat_state(nnx.state(model, nnx.Param))}
  assert not any('pos_embed' in map(str, p) for p in param_paths)
  np.testing.assert_array_equal(model.pos_embed[...], dit.sincos_pos_embed_2d(32, 4))


def test_jit_matches_eager():
  model = _cached(perturbed=True)
  x, t, y = _inputs()
  eager = model(x, t, y)
  jitted = _forward(model, x, t, y)
  np.testing.assert_allclose(jitted, eager, atol=1e-5)
  graphdef, state = nnx.split(model)
  pure = jax.jit(lambda s, x, t, y: nnx.merge(graphdef, s)(x, t, y))(state, x, t, y)
  np.testing.assert_allclose(pure, eager, atol=1e-5)


@pytest.mark.parametrize('patch_size, params', [(16, 33_058_176), (8, 32_615_232)])
def test_default_sizes_build_abstractly(patch_size, params):
  """Defaults are DiT-S-like (~33M); only the patch embedding and final linear depend on the patch size."""
  model = nnx.eval_shape(lambda: DiT(patch_size=patch_size, rngs=nnx.Rngs(0)))
  assert _count(model) == params
  assert model.pos_embed.shape == ((128 // patch_size) ** 2, 384)
  assert model.label_embed.embedding.shape == (14, 384)
  graphdef, state = nnx.split(model)
  out = jax.eval_shape(
    lambda s, x, t, y: nnx.merge(graphdef, s)(x, t, y),
    state,
    jax.ShapeDtypeStruct((2, 128, 128, 3), jnp.float32),
    jax.ShapeDtypeStruct((2,), jnp.float32),
    jax.ShapeDtypeStruct((2,), jnp.int32),
  )
  assert out.shape == (2, 128, 128, 3) and out.dtype == jnp.float32


def test_bad_sizes_raise():
  with pytest.raises(ValueError):
    _tiny(heads=3)
  with pytest.raises(ValueError):
    _tiny(image_size=18)
  with pytest.raises(ValueError, match='overlap'):
    _tiny(overlap=3)  # More than half the patch: a tile would reach past its neighbour's centre.


def test_overlap_add_places_cross_faded_tiles_as_a_brute_force_sum_does():
  """Each token's (p + 2o)-pixel tile, windowed, added onto the canvas at its patch less o, over the summed
  windows: the same as `overlap_add`, with or without jit; flat tiles give a flat image; overlap 0 is unpatchify."""
  p, o, h, w, c = 8, 2, 32, 24, 3
  k = p + 2 * o
  tokens = np.random.default_rng(0).normal(size=(2, (h // p) * (w // p), k * k * c)).astype(np.float32)
  window = np.outer(patches.crossfade_window(p, o), patches.crossfade_window(p, o))
  canvas, weight = np.zeros((2, h + 2 * o, w + 2 * o, c)), np.zeros((h + 2 * o, w + 2 * o))
  for index, tile in enumerate(np.moveaxis(tokens.reshape(2, -1, k, k, c), 1, 0)):
    top, left = p * (index // (w // p)), p * (index % (w // p))
    canvas[:, top : top + k, left : left + k] += tile * window[..., None]
    weight[top : top + k, left : left + k] += window
  expected = canvas[:, o : o + h, o : o + w] / weight[o : o + h, o : o + w, None]
  assert np.abs(np.asarray(patches.overlap_add(tokens, p, o, h, w, c)) - expected).max() < 1e-5
  jitted = jax.jit(lambda x: patches.overlap_add(x, p, o, h, w, c))
  assert np.abs(np.asarray(jitted(tokens)) - expected).max() < 1e-5
  flat = patches.overlap_add(np.full_like(tokens, 0.7), p, o, h, w, c)
  assert np.allclose(flat, 0.7, atol=1e-6)
  plain = tokens[..., : p * p * c]
  assert np.array_equal(patches.overlap_add(plain, p, 0, h, w, c), patches.unpatchify(plain, p, h, w, c))
  assert patches.crossfade_window(p, o).tolist() == [0.125, 0.375, 0.625, 0.875, 1, 1, 1, 1, 0.875, 0.625, 0.375, 0.125]


def test_attention_matches_jax_reference():
  """Heads are laid out like timm's qkv (3, heads, head_dim); scaled dot-product softmax over keys."""
  attn = _cached().blocks[0].attn
  x = jnp.asarray(_normal((2, 16, 32), 5))
  q, k, v = jnp.moveaxis(attn.qkv(x).reshape(2, 16, 3, 2, 16), 2, 0)
  expected = attn.proj(jax.nn.dot_product_attention(q, k, v).reshape(2, 16, 32))
  np.testing.assert_allclose(attn(x), expected, atol=1e-5)


MODERN = dict(norm='rmsnorm', qk_norm=True, mlp='swiglu', rope=True, bottleneck=8, class_tokens=2, class_token_block=1)


def test_x_prediction_returns_the_velocity_of_its_clean_image_estimate():
  # Fresh, the network's x̂ is exactly 0, so the velocity is (0 - x_t) / max(1 - t, t_eps).
  x, _, y = _inputs()
  t = jnp.asarray([0.0, 0.5, 0.97, 1.0])
  v = _tiny(prediction='x', **MODERN)(x, t, y)
  np.testing.assert_allclose(v, -x / np.maximum(1 - t, 0.05)[:, None, None, None], rtol=1e-6)
  # Perturbed, x̂ = x_t + (1 - t) v recovers the same network output at every t away from the clip.
  model = _perturb(_tiny(prediction='x'))
  reference = _perturb(_tiny(prediction='v'))  # The same weights: only the output's meaning differs.
  t = jnp.asarray([0.1, 0.4, 0.6, 0.9])
  x_hat = x + (1 - t)[:, None, None, None] * model(x, t, y)
  np.testing.assert_allclose(x_hat, reference(x, t, y), rtol=1e-4, atol=1e-5)


@pytest.mark.parametrize(
  'option',
  [
    dict(norm='rmsnorm'),
    dict(qk_norm=True),
    dict(mlp='swiglu'),
    dict(rope=True),
    dict(bottleneck=8),
    dict(class_tokens=2, class_token_block=1),
    dict(overlap=1),
    MODERN,
  ],
)
def test_each_block_option_trains_its_parameters_and_changes_the_output(option):
  x, t, y = _inputs()
  base, model = _perturb(_tiny()), _perturb(_tiny(**option))
  out = _forward(model, x, t, y)
  assert out.shape == x.shape and bool(jnp.all(jnp.isfinite(out)))
  assert not np.allclose(out, _forward(base, x, t, y))
  grads = nnx.grad(lambda m: jnp.mean(jnp.square(m(x, t, y))))(model)
  assert all(bool(jnp.any(g != 0)) for g in jax.tree.leaves(grads)), 'a parameter gets no gradient'


def test_swiglu_costs_what_the_gelu_mlp_costs():
  gelu, swiglu = _count(_tiny()), _count(_tiny(mlp='swiglu'))
  assert abs(swiglu - gelu) / gelu < 0.02


def test_rope_makes_attention_depend_on_relative_position_only():
  cos, sin = (jnp.asarray(a) for a in dit.rope_tables(8, 4))
  q, k = jnp.asarray(_normal((1, 1, 1, 8), 0)), jnp.asarray(_normal((1, 1, 1, 8), 1))
  score = lambda i, j: float(
    jnp.sum(dit.apply_rope(q, cos[i : i + 1], sin[i : i + 1]) * dit.apply_rope(k, cos[j : j + 1], sin[j : j + 1]))
  )
  # Tokens are row-major on a 4x4 grid: (0,0)-(1,1) and (2,1)-(3,2) are the same offset, (0,0)-(1,2) is not.
  assert score(0, 5) == pytest.approx(score(9, 14), abs=1e-5)
  assert abs(score(0, 5) - score(0, 6)) > 1e-3
  # A rotation: lengths are kept; the class-token prefix is not rotated.
  np.testing.assert_allclose(jnp.linalg.norm(dit.apply_rope(q, cos[7:8], sin[7:8])), jnp.linalg.norm(q), rtol=1e-6)
  cos2, sin2 = dit.rope_tables(8, 4, prefix=3)
  assert cos2.shape == (19, 8) and np.all(cos2[:3] == 1) and np.all(sin2[:3] == 0)
  np.testing.assert_array_equal(cos2[3:], cos)


def test_in_context_class_tokens_take_part_and_leave_only_the_patch_tokens():
  x, t, y = _inputs()
  model = _perturb(_tiny(class_tokens=2, class_token_block=1))
  before = model(x, t, y)
  assert before.shape == x.shape  # The two class tokens are dropped before the final layer.
  model.class_token_pos[...] = model.class_token_pos[...] + 1.0  # Only the class tokens see this parameter.
  assert not np.allclose(before, model(x, t, y))
  with pytest.raises(ValueError, match='class_token_block'):
    _tiny(class_tokens=2, class_token_block=2)
