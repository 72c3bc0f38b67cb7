"""Rectified flow, in the original project's convention (its ONNX contract and web page rely on it).

    x_t = t * data + (1 - t) * noise,   t in [0, 1],   t = 0 is noise, t = 1 is data,
    target velocity v = data - noise,   so d x_t / d t = v and x_1 = x_0 + integral of v.

The model takes the raw t. Sampling integrates the learned velocity from t = 0 to 1 with Euler
or Heun steps; classifier-free guidance `v = v_null + s * (v_label - v_null)` evaluates both
velocities in one forward pass over a doubled batch.
"""

from __future__ import annotations

import functools

import jax
import jax.numpy as jnp
import numpy as np
from flax import nnx

SAMPLERS = ('euler', 'heun')
TIMESTEP_DISTRIBUTIONS = ('uniform', 'logit_normal')


def interpolate(data, noise, t):
  """x_t for images (N, H, W, C) and times (N,)."""
  t = t.reshape((-1,) + (1,) * (data.ndim - 1))
  return t * data + (1 - t) * noise


def target_velocity(data, noise):
  return data - noise


def sample_timesteps(key, n: int, distribution: str = 'uniform', mean: float = 0.0, std: float = 1.0):
  """Training times: uniform on [0, 1], or logit-normal (sigmoid of N(mean, std)), which favours mid-flow times."""
  if distribution == 'uniform':
    return jax.random.uniform(key, (n,))
  if distribution == 'logit_normal':
    return jax.nn.sigmoid(mean + std * jax.random.normal(key, (n,)))
  raise ValueError(f'unknown timestep distribution {distribution!r}; choose one of {TIMESTEP_DISTRIBUTIONS}')


def per_example_loss(model, data, labels, noise, t):
  """Mean squared velocity error per example, in float32."""
  pred = model(interpolate(data, noise, t), t, labels)
  err = pred.astype(jnp.float32) - target_velocity(data, noise).astype(jnp.float32)
  return jnp.mean(jnp.square(err), axis=tuple(range(1, err.ndim)))


def guided_velocity(model, x, t, labels, cfg):
  """v_null + cfg * (v_label - v_null), both from one forward pass over the doubled batch."""
  n = x.shape[0]
  null = jnp.full_like(labels, model.null_label)
  v = model(jnp.concatenate([x, x]), jnp.concatenate([t, t]), jnp.concatenate([labels, null]))
  v_label, v_null = v[:n], v[n:]
  return v_null + cfg * (v_label - v_null)


def integrate(velocity, x0, steps: int, sampler: str = 'euler'):
  """Solves dx/dt = velocity(x, t) from t = 0 to 1 in `steps` equal steps (Heun: two evaluations per step)."""
  if sampler not in SAMPLERS:
    raise ValueError(f'unknown sampler {sampler!r}; choose one of {SAMPLERS}')
  dt = 1.0 / steps
  n = x0.shape[0]

  def step(i, x):
    t = jnp.full((n,), i * dt, jnp.float32)
    v = velocity(x, t)
    if sampler == 'euler':
      return x + dt * v
    v_next = velocity(x + dt * v, t + dt)
    return x + dt * 0.5 * (v + v_next)

  return jax.lax.fori_loop(0, steps, step, x0.astype(jnp.float32))


@functools.lru_cache(maxsize=16)
def _sample_fn(graphdef, steps: int, sampler: str, guided: bool):
  """The jitted sampler for one model graph and setting; guidance 1 needs no unconditional pass."""

  def run(state, noise, labels, cfg):
    model = nnx.merge(graphdef, state)
    model.eval()
    if guided:
      velocity = lambda x, t: guided_velocity(model, x, t, labels, cfg)
    else:
      velocity = lambda x, t: model(x, t, labels).astype(jnp.float32)
    return integrate(velocity, noise, steps, sampler)

  return jax.jit(run)


def sample(graphdef, state, noise, labels, *, steps: int = 50, cfg: float = 1.0, sampler: str = 'euler'):
  """Images (float32, the model's normalised range) from `noise` (N, H, W, C) for int `labels` (N,)."""
  if steps < 1:
    raise ValueError(f'steps must be >= 1, got {steps}')
  fn = _sample_fn(graphdef, int(steps), sampler, float(cfg) != 1.0)
  return fn(state, jnp.asarray(noise, jnp.float32), jnp.asarray(labels, jnp.int32), jnp.float32(cfg))


def noise_like(seed: int, n: int, image_size: int, channels: int = 3) -> np.ndarray:
  """The seeded starting noise (N, S, S, C): one seed, one set of samples, on any backend."""
  return np.asarray(jax.random.normal(jax.random.key(seed), (n, image_size, image_size, channels), jnp.float32))


def _lowbias32(x: np.ndarray) -> np.ndarray:
  """Chris Wellons' lowbias32 integer hash on uint32 (multiplications wrap, as JavaScript's Math.imul)."""
  x = x ^ (x >> np.uint32(16))
  x = x * np.uint32(0x7FEB352D)
  x = x ^ (x >> np.uint32(15))
  x = x * np.uint32(0x846CA68B)
  return x ^ (x >> np.uint32(16))


def browser_noise(seed: int, n: int, image_size: int, channels: int = 3) -> np.ndarray:
  """The web page's seeded noise (N, S, S, C) float32, bit for bit what its `noise.js` makes from the same seed.

  Counter-based, so JavaScript can repeat it without a library: with k = lowbias32(seed) + 0x9E3779B9, element
  i (in NHWC order) takes the 32-bit word w_i = lowbias32(lowbias32(i + k) + k), all mod 2**32; each pair
  of words (2j, 2j+1) gives two uniforms u = ((w >> 8) + 0.5) / 2**24 in (0, 1), and Box-Muller turns them into
  sqrt(-2 ln u1) * (cos, sin)(2 pi u2), computed in float64 and rounded to float32. Image j of a batch is
  the next S*S*C values of the same stream, so image 0 of N is the image the page draws for that seed.
  `Generator.sample(labels, noise=browser_noise(seed, len(labels), size))` repeats the page's samples.
  """
  if not 0 <= seed < 2**32:
    raise ValueError(f'the page seed is a 32-bit unsigned integer, got {seed}')
  count = n * image_size * image_size * channels
  with np.errstate(over='ignore'):
    key = _lowbias32(np.asarray([seed], np.uint32))[0] + np.uint32(0x9E3779B9)
    index = np.arange(count + count % 2, dtype=np.uint32)
    words = _lowbias32(_lowbias32(index + key) + key)
  u = ((words >> np.uint32(8)).astype(np.float64) + 0.5) / 2.0**24
  radius, angle = np.sqrt(-2.0 * np.log(u[0::2])), 2.0 * np.pi * u[1::2]
  z = np.stack([radius * np.cos(angle), radius * np.sin(angle)], axis=-1).reshape(-1)[:count]
  return z.astype(np.float32).reshape(n, image_size, image_size, channels)
