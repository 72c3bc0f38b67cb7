"""Rectified flow, in the original project's convention (its ONNX contract and web page rely on it).

    x_t = t * data + (1 - t) * noise,   t in [0, 1],   t = 0 is noise, t = 1 is data,
    target velocity v = data - noise,   so d x_t / d t = v and x_1 = x_0 + integral of v.

The model takes the raw t. Sampling integrates the learned velocity from t = 0 to 1 with Euler
or Heun steps (Heun's last step is Euler's, as in EDM and JiT: its second evaluation would be at t = 1, where
an x-predicting network divides by t_eps and no training time lies); classifier-free guidance
`v = v_null + s * (v_label - v_null)` evaluates both velocities in one forward pass over a doubled batch. A
guidance interval (lo, hi) (Kynkäänniemi et al. 2024) guides only the steps whose t lies in it; the others take
the plain conditional velocity from one pass over the undoubled batch.
"""

from __future__ import annotations

import functools

import jax
import jax.numpy as jnp
import jax.scipy.special
import numpy as np
from flax import nnx

from tinycats import sharding
from tinycats.data import augment

SAMPLERS = ('euler', 'heun')
TIMESTEP_DISTRIBUTIONS = ('uniform', 'logit_normal')


def interpolate(data, noise, t):
  """x_t for images (N, H, W, C) and times (N,)."""
  t = t.reshape((-1,) + (1,) * (data.ndim - 1))
  return t * data + (1 - t) * noise


def target_velocity(data, noise, t=None, t_eps: float = 0.0):
  """data - noise; with `t_eps` > 0, JiT's (data - x_t) / max(1 - t, t_eps), the same but for t > 1 - t_eps.

  An x-predicting network's velocity (x̂ - x_t) / max(1 - t, t_eps) equals this target exactly when x̂ = data,
  so the velocity loss is then a weighted loss on x̂ at every t.
  """
  if not t_eps:
    return data - noise
  t = t.reshape((-1,) + (1,) * (data.ndim - 1))
  return (data - noise) * ((1 - t) / jnp.maximum(1 - t, t_eps))


def sample_timesteps(key, n: int, distribution: str = 'uniform', mean: float = 0.0, std: float = 1.0):
  """Training times: uniform on [0, 1], or logit-normal (sigmoid of N(mean, std)), which favours mid-flow times."""
  if distribution == 'uniform':
    return jax.random.uniform(key, (n,))
  if distribution == 'logit_normal':
    return jax.nn.sigmoid(mean + std * jax.random.normal(key, (n,)))
  raise ValueError(f'unknown timestep distribution {distribution!r}; choose one of {TIMESTEP_DISTRIBUTIONS}')


def timestep_quantile(q, distribution: str = 'uniform', mean: float = 0.0, std: float = 1.0):
  """The time below which a fraction `q` of `sample_timesteps`' draws fall: stratified draws of the training times."""
  if distribution == 'uniform':
    return q
  if distribution == 'logit_normal':
    return jax.nn.sigmoid(mean + std * jax.scipy.special.ndtri(q))
  raise ValueError(f'unknown timestep distribution {distribution!r}; choose one of {TIMESTEP_DISTRIBUTIONS}')


def per_example_loss(model, data, labels, noise, t):
  """Mean squared velocity error per example, in float32 (JiT's target for an x-predicting `model`)."""
  pred = model(interpolate(data, noise, t), t, labels)
  t_eps = model.t_eps if getattr(model, 'prediction', 'v') == 'x' else 0.0
  target = target_velocity(data.astype(jnp.float32), noise.astype(jnp.float32), t, t_eps)
  err = pred.astype(jnp.float32) - target
  return jnp.mean(jnp.square(err), axis=tuple(range(1, err.ndim)))


def check_guidance_interval(interval) -> tuple[float, float]:
  """(lo, hi) as floats from a pair with 0 <= lo <= hi <= 1, else ValueError naming the value."""
  try:
    lo, hi = (float(v) for v in interval)
  except (TypeError, ValueError):
    lo = hi = float('nan')
  if not 0 <= lo <= hi <= 1:
    raise ValueError(f'guidance interval must be a pair (lo, hi) with 0 <= lo <= hi <= 1, got {interval!r}')
  return lo, hi


def guides_everywhere(interval) -> bool:
  """Whether (lo, hi) guides every t in [0, 1] at the sampler's float32 precision: lo 0 and hi 1."""
  lo, hi = check_guidance_interval(interval)
  return bool(np.float32(lo) <= 0 and np.float32(hi) >= 1)


def in_guidance_interval(t, lo, hi):
  """lo <= t <= hi in float32; hi 1 has no upper bound."""
  t, lo, hi = (jnp.asarray(v, jnp.float32) for v in (t, lo, hi))
  return (lo <= t) & ((t <= hi) | (hi >= 1))


def guided_velocity(model, x, t, labels, guidance, guidance_interval=(0.0, 1.0)):
  """v_null + guidance * (v_label - v_null), both from one forward pass over the doubled batch, where t lies in
  `guidance_interval`, else v_label (then float32). When no example's t is in it (a sampler's step shares one
  t), only the conditional batch is run (`jax.lax.cond`). (0, 1) guides every t: no condition at all."""

  def label_and_null(x):
    n = x.shape[0]
    null = jnp.full_like(labels, model.null_label)
    v = model(jnp.concatenate([x, x]), jnp.concatenate([t, t]), jnp.concatenate([labels, null]))
    return v[:n], v[n:]

  lo, hi = guidance_interval
  if not isinstance(lo, jax.Array) and not isinstance(hi, jax.Array) and guides_everywhere((lo, hi)):
    v_label, v_null = label_and_null(x)
    return v_null + guidance * (v_label - v_null)
  inside = in_guidance_interval(t, lo, hi)

  def guided(x):
    v_label, v_null = label_and_null(x)
    v = (v_null + guidance * (v_label - v_null)).astype(jnp.float32)
    return jnp.where(inside.reshape((-1,) + (1,) * (x.ndim - 1)), v, v_label.astype(jnp.float32))

  def conditional(x):
    return model(x, t, labels).astype(jnp.float32)

  return jax.lax.cond(jnp.any(inside), guided, conditional, x)


def _step(velocity, x, t, dt: float, sampler: str):
  """(x at t + dt, the velocity at (x, t)): one Euler or Heun step, the body of `integrate` and `trajectory`."""
  v = velocity(x, t)
  if sampler == 'euler':
    return x + dt * v, v
  v_next = velocity(x + dt * v, t + dt)
  return x + dt * 0.5 * (v + v_next), v


def _checked(sampler: str) -> str:
  if sampler not in SAMPLERS:
    raise ValueError(f'unknown sampler {sampler!r}; choose one of {SAMPLERS}')
  return sampler


def integrate(velocity, x0, steps: int, sampler: str = 'euler'):
  """Solves dx/dt = velocity(x, t) from t = 0 to 1 in `steps` equal steps (Heun: two evaluations per step, but
  its last step is Euler's, which evaluates no velocity at t = 1)."""
  sampler = _checked(sampler)
  dt = 1.0 / steps
  n = x0.shape[0]
  at = lambda i: jnp.full((n,), i * dt, jnp.float32)
  x = jax.lax.fori_loop(0, steps - 1, lambda i, x: _step(velocity, x, at(i), dt, sampler)[0], x0.astype(jnp.float32))
  return _step(velocity, x, at(steps - 1), dt, 'euler')[0]


def _velocity(model, labels, guidance, lo, hi, guided: bool, interval: bool):
  """The sampler's velocity(x, t): guided (in the interval (lo, hi) when `interval`) or the conditional model's."""
  if guided and interval:
    return lambda x, t: guided_velocity(model, x, t, labels, guidance, (lo, hi))
  if guided:
    return lambda x, t: guided_velocity(model, x, t, labels, guidance)
  return lambda x, t: model(x, t, labels).astype(jnp.float32)


@functools.lru_cache(maxsize=16)
def _sample_fn(graphdef, steps: int, sampler: str, guided: bool, interval: bool = False):
  """The jitted sampler for one model graph and setting; guidance 1 needs no unconditional pass, and `interval`
  (a guidance interval other than (0, 1), given as float32 `lo`, `hi`) guides only the steps in it."""

  def run(state, noise, labels, guidance, lo=0.0, hi=1.0):
    model = nnx.merge(graphdef, state)
    model.eval()
    velocity = _velocity(model, labels, guidance, lo, hi, guided, interval)
    return integrate(velocity, noise, steps, sampler)

  return jax.jit(run)


@functools.lru_cache(maxsize=16)
def _trajectory_fn(graphdef, steps: int, sampler: str, guided: bool, interval: bool = False):
  """`_sample_fn`, keeping every step's state and velocity (`jax.lax.scan` over the same step)."""

  def run(state, noise, labels, guidance, lo=0.0, hi=1.0):
    model = nnx.merge(graphdef, state)
    model.eval()
    velocity = _velocity(model, labels, guidance, lo, hi, guided, interval)
    dt, n = 1.0 / steps, noise.shape[0]

    def step(x, i, kind=sampler):
      x_next, v = _step(velocity, x, jnp.full((n,), i * dt, jnp.float32), dt, kind)
      return x_next, (x, v)

    x, (states, velocities) = jax.lax.scan(step, noise.astype(jnp.float32), jnp.arange(steps - 1))
    last, (state, velocity_last) = step(x, steps - 1, 'euler')  # As `integrate`: Heun's last step is Euler's.
    return jnp.concatenate([states, state[None], last[None]]), jnp.concatenate([velocities, velocity_last[None]])

  return jax.jit(run)


def _compiled(make, graphdef, steps: int, guidance: float, sampler: str, guidance_interval):
  """(the jitted program `make` builds for these settings, its (guidance, lo, hi) arguments): one check of the
  settings for `sample` and `trajectory`. Unguided steps and a guidance interval compile other programs."""
  if steps < 1:
    raise ValueError(f'steps must be >= 1, got {steps}')
  if sampler not in SAMPLERS:
    raise ValueError(f'unknown sampler {sampler!r}; choose one of {SAMPLERS}')
  lo, hi = check_guidance_interval(guidance_interval)
  guided = float(guidance) != 1.0
  fn = make(graphdef, int(steps), sampler, guided, guided and not guides_everywhere((lo, hi)))
  return fn, (jnp.float32(guidance), jnp.float32(lo), jnp.float32(hi))


def sample(
  graphdef,
  state,
  noise,
  labels,
  *,
  steps: int = 50,
  guidance: float = 1.0,
  sampler: str = 'euler',
  guidance_interval=(0.0, 1.0),
):
  """Images (float32, the model's normalised range) from `noise` (N, H, W, C) for int `labels` (N,).

  Guidance `guidance` applies to the steps whose t (0 noise, 1 data) lies in `guidance_interval` = (lo, hi),
  lo <= t <= hi (Heun's second evaluation, at t + dt, checks its own t); the other steps take the conditional
  velocity alone, one network pass over the undoubled batch. (0, 1), the default, guides every step."""
  fn, settings = _compiled(_sample_fn, graphdef, steps, guidance, sampler, guidance_interval)
  return fn(state, jnp.asarray(noise, jnp.float32), jnp.asarray(labels, jnp.int32), *settings)


def trajectory(
  graphdef,
  state,
  noise,
  labels,
  *,
  steps: int = 50,
  guidance: float = 1.0,
  sampler: str = 'euler',
  guidance_interval=(0.0, 1.0),
):
  """The path `sample` takes, step by step: (t, x, v) as NumPy float32 arrays, with t (steps + 1,) the times
  0, 1/steps, ..., 1; x (steps + 1, N, H, W, C) the states x_t at those times, x[0] = `noise` and x[-1] the
  images `sample` returns for the same arguments; v (steps, N, H, W, C) the velocity each step evaluated at
  (x[i], t[i]) (guided where `sample` guides; Heun's second evaluation is not kept).

  The clean-image estimate along the path is x̂ = x_t + (1 - t) v (the point the step's straight line would reach
  at t = 1): an x-predicting network's own output where 1 - t >= t_eps. For pictures and notebooks; the samplers
  keep only the last state."""
  fn, settings = _compiled(_trajectory_fn, graphdef, steps, guidance, sampler, guidance_interval)
  x, v = fn(state, jnp.asarray(noise, jnp.float32), jnp.asarray(labels, jnp.int32), *settings)
  return np.arange(steps + 1, dtype=np.float32) / np.float32(steps), np.asarray(x), np.asarray(v)


def noise_like(seed: int, n: int, image_size: int, channels: int = 3) -> np.ndarray:
  """The seeded starting noise (N, S, S, C): one seed, one set of samples, on any backend."""
  return np.asarray(jax.random.normal(jax.random.key(seed), (n, image_size, image_size, channels), jnp.float32))


def sample_grid(
  config,
  graphdef,
  state,
  labels=None,
  per_label: int = 8,
  *,
  seed: int = 0,
  noise: np.ndarray | None = None,
  steps: int | None = None,
  guidance: float | None = None,
  sampler: str | None = None,
  guidance_interval=None,
  batch_size: int = 256,
  mesh=None,
) -> np.ndarray:
  """uint8 (len(labels), per_label, S, S, 3) from the DiT (`graphdef`, `state`) of the run `config`: one row per
  label index (all classes by default), from `noise_like(seed, ...)` or the given float32 NHWC `noise` (one image
  per row entry, row by row). Sampling settings default to the run's `sample.*`. The one grid of samples: the
  training's sample grids, `Generator`, `tinycats evaluate` and the Hub export's samples.png all come from here.
  """
  s = config.sample
  labels = list(range(len(config.data.classes))) if labels is None else list(labels)
  index = np.repeat(np.asarray(labels, np.int32), per_label)
  if noise is None:
    noise = noise_like(seed, len(index), config.data.image_size)
  interval = check_guidance_interval(
    s.get('guidance_interval', (0.0, 1.0)) if guidance_interval is None else guidance_interval
  )
  settings = dict(
    steps=s.steps if steps is None else steps,
    guidance=s.guidance if guidance is None else guidance,
    sampler=sampler or s.sampler,
    guidance_interval=interval,
  )
  images = sharding.run_batched(
    lambda st, x, y: sample(graphdef, st, x, y, **settings),
    state,
    (np.asarray(noise, np.float32), index),
    batch_size,
    mesh or sharding.make_mesh(),
  )
  images = augment.to_uint8(images, config.data.normalization)
  return images.reshape((len(labels), per_label) + images.shape[1:])


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
