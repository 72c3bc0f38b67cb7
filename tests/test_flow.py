"""The flow convention, the samplers, guidance and the EMA, on exact velocity fields and a tiny DiT."""

import jax
import jax.numpy as jnp
import numpy as np
import pytest
from flax import nnx

from tinycats import flow
from tinycats.data import augment
from tinycats.models import ema
from tinycats.models.dit import DiT


class ExactVelocity:
  """A 'model' that returns the true target velocity for fixed (data, noise): the perfect predictor."""

  null_label = 3

  def __init__(self, data, noise):
    self.data, self.noise = data, noise

  def __call__(self, x, t, y):
    return flow.target_velocity(self.data, self.noise)


def test_interpolation_runs_from_noise_at_0_to_data_at_1():
  rng = np.random.default_rng(0)
  data, noise = rng.normal(size=(2, 4, 4, 3)), rng.normal(size=(2, 4, 4, 3))
  np.testing.assert_allclose(flow.interpolate(data, noise, np.zeros(2)), noise)
  np.testing.assert_allclose(flow.interpolate(data, noise, np.ones(2)), data)
  np.testing.assert_allclose(flow.interpolate(data, noise, np.full(2, 0.25)), 0.25 * data + 0.75 * noise)


def test_perfect_velocity_predictor_has_zero_loss_and_a_wrong_one_does_not():
  rng = np.random.default_rng(1)
  data = jnp.asarray(rng.normal(size=(3, 4, 4, 3)), jnp.float32)
  noise = jnp.asarray(rng.normal(size=(3, 4, 4, 3)), jnp.float32)
  t = jnp.asarray([0.1, 0.5, 0.9])
  labels = jnp.zeros(3, jnp.int32)
  assert float(jnp.max(flow.per_example_loss(ExactVelocity(data, noise), data, labels, noise, t))) == 0.0
  wrong = ExactVelocity(noise, data)  # The reversed direction.
  assert float(jnp.min(flow.per_example_loss(wrong, data, labels, noise, t))) > 1.0


def _two_point_velocity(a, b):
  """The exact marginal velocity E[data - noise | x_t = x] when data is a or b (equal odds), noise N(0, I)."""
  points = jnp.stack([a, b])

  def velocity(x, t):
    tt = t[:, None, None, None]
    sq = jnp.sum((x[:, None] - tt[:, None] * points[None]) ** 2, axis=(2, 3, 4))
    weights = jax.nn.softmax(-sq / (2 * jnp.maximum(1 - t[:, None], 1e-4) ** 2), axis=1)
    expected_data = jnp.einsum('np,phwc->nhwc', weights, points)
    return (expected_data - x) / jnp.maximum(1 - tt, 1e-4)

  return velocity


def test_euler_with_the_exact_two_point_velocity_lands_on_the_data():
  rng = np.random.default_rng(2)
  a = jnp.asarray(rng.normal(size=(2, 2, 3)), jnp.float32)
  b = -a
  x0 = jnp.asarray(rng.normal(size=(64, 2, 2, 3)), jnp.float32)
  x1 = np.asarray(flow.integrate(_two_point_velocity(a, b), x0, steps=100, sampler='euler'))
  to_a = np.abs(x1 - np.asarray(a)).max(axis=(1, 2, 3))
  to_b = np.abs(x1 - np.asarray(b)).max(axis=(1, 2, 3))
  assert np.all(np.minimum(to_a, to_b) < 1e-3)
  assert 0 < np.sum(to_a < to_b) < 64  # Both points are reached: the flow transports, it does not collapse.


def test_constant_velocity_is_integrated_exactly_by_both_samplers():
  x0 = jnp.ones((2, 2, 2, 3))
  v = jnp.full((2, 2, 2, 3), 0.5)
  for sampler in flow.SAMPLERS:
    np.testing.assert_allclose(flow.integrate(lambda x, t: v, x0, steps=3, sampler=sampler), x0 + v, rtol=1e-6)
  # A velocity linear in t: Heun is exact up to its last step, which is Euler's (no evaluation at t = 1, as in
  # EDM and JiT): x0 + 0.75^2 / 2 + 0.25 * 0.75; Euler is off from the first step.
  ramp = lambda x, t: jnp.broadcast_to(t[:, None, None, None], x.shape)  # x(1) = x0 + 1/2.
  np.testing.assert_allclose(flow.integrate(ramp, x0, steps=4, sampler='heun'), x0 + 0.28125 + 0.1875, rtol=1e-6)
  assert abs(float(flow.integrate(ramp, x0, steps=4, sampler='euler')[0, 0, 0, 0]) - 1.5) > 0.05


def test_timestep_distributions_stay_in_the_unit_interval():
  for kind in flow.TIMESTEP_DISTRIBUTIONS:
    t = np.asarray(flow.sample_timesteps(jax.random.key(0), 4096, kind))
    assert t.min() >= 0 and t.max() <= 1 and abs(t.mean() - 0.5) < 0.03
  logit_normal = np.asarray(flow.sample_timesteps(jax.random.key(0), 4096, 'logit_normal'))
  assert np.mean(np.abs(logit_normal - 0.5) < 0.25) > 0.6  # Mid-flow times are favoured (uniform: 0.5).


@pytest.mark.parametrize(
  'kind, mean, std', [('uniform', 0.0, 1.0), ('logit_normal', 0.0, 1.0), ('logit_normal', -2.2, 0.8)]
)
def test_timestep_quantiles_are_those_of_the_training_draws(kind, mean, std):
  """The validation loss stratifies t by these quantiles: they must be the training distribution's."""
  drawn = np.sort(np.asarray(flow.sample_timesteps(jax.random.key(1), 20000, kind, mean, std)))
  q = np.array([0.05, 0.25, 0.5, 0.75, 0.95])
  np.testing.assert_allclose(np.asarray(flow.timestep_quantile(q, kind, mean, std)), np.quantile(drawn, q), atol=0.01)


@pytest.fixture(scope='module')
def tiny_dit():
  """A float32 tiny DiT whose final layer is randomised, so labels and guidance matter."""
  model = DiT(
    image_size=8, patch_size=4, width=32, depth=1, heads=2, num_classes=3, dtype=jnp.float32, rngs=nnx.Rngs(0)
  )
  rng = np.random.default_rng(0)
  for layer in (model.final_layer.linear, model.final_layer.adaLN_modulation, model.blocks[0].adaLN_modulation):
    layer.kernel[...] = jnp.asarray(rng.normal(0, 0.05, layer.kernel.shape), jnp.float32)
  return nnx.split(model)


def test_guidance_scale_1_is_the_conditional_model_and_0_the_unconditional(tiny_dit):
  graphdef, state = tiny_dit
  model = nnx.merge(graphdef, state)
  rng = np.random.default_rng(3)
  x = jnp.asarray(rng.normal(size=(4, 8, 8, 3)), jnp.float32)
  t = jnp.asarray([0.0, 0.3, 0.6, 0.9])
  labels = jnp.asarray([0, 1, 2, 1])
  conditional, unconditional = model(x, t, labels), model(x, t, jnp.full(4, model.null_label))
  assert float(jnp.max(jnp.abs(conditional - unconditional))) > 1e-3
  np.testing.assert_allclose(flow.guided_velocity(model, x, t, labels, 1.0), conditional, atol=1e-5)
  np.testing.assert_allclose(flow.guided_velocity(model, x, t, labels, 0.0), unconditional, atol=1e-5)
  np.testing.assert_allclose(flow.guided_velocity(model, x, t, labels, 2.0), 2 * conditional - unconditional, atol=1e-5)
  # The sampler's guided path at scale 1 (forced) agrees with its unguided shortcut.
  noise = flow.noise_like(0, 4, 8)
  shortcut = flow.sample(graphdef, state, noise, labels, steps=5, guidance=1.0)
  forced = flow._sample_fn(graphdef, 5, 'euler', True)(state, noise, labels, jnp.float32(1.0))
  np.testing.assert_allclose(shortcut, forced, atol=1e-5)


def test_seeds_reproduce_samples_and_different_seeds_differ(tiny_dit):
  graphdef, state = tiny_dit
  labels = np.asarray([0, 1, 2])
  run = lambda seed, sampler='euler': np.asarray(
    flow.sample(graphdef, state, flow.noise_like(seed, 3, 8), labels, steps=4, guidance=1.5, sampler=sampler)
  )
  np.testing.assert_array_equal(run(7), run(7))
  assert np.abs(run(7) - run(8)).max() > 0.1
  assert np.abs(run(7, 'heun') - run(7)).max() > 0  # Heun is a different integrator.


def _reference_sample(model, noise, labels, steps, guidance, interval, sampler):
  """The guidance-interval sampler written out step by step in Python: guided v where lo <= t <= hi (float32;
  hi 1 has no upper bound), the conditional v elsewhere."""
  lo, hi = np.float32(interval[0]), np.float32(interval[1])
  dt, n = 1.0 / steps, len(labels)
  labels = jnp.asarray(labels, jnp.int32)

  def velocity(x, t):
    times = jnp.full((n,), t, jnp.float32)
    if lo <= t and (t <= hi or hi >= 1):
      null = jnp.full_like(labels, model.null_label)
      v = model(jnp.concatenate([x, x]), jnp.concatenate([times, times]), jnp.concatenate([labels, null]))
      return v[n:] + jnp.float32(guidance) * (v[:n] - v[n:])
    return model(x, times, labels)

  x = jnp.asarray(noise, jnp.float32)
  for i in range(steps):
    t = np.float32(i) * np.float32(dt)
    v = velocity(x, t)
    if sampler == 'euler' or i == steps - 1:  # Heun's last step is Euler's.
      x = x + dt * v
    else:
      x = x + dt * 0.5 * (v + velocity(x + dt * v, t + np.float32(dt)))
  return np.asarray(x)


@pytest.mark.parametrize('sampler', flow.SAMPLERS)
def test_a_guidance_interval_guides_only_the_steps_inside_it(tiny_dit, sampler):
  graphdef, state = tiny_dit
  noise, labels = flow.noise_like(5, 3, 8), np.asarray([0, 1, 2])
  run = lambda **kw: np.asarray(flow.sample(graphdef, state, noise, labels, steps=6, sampler=sampler, **kw))
  guided, conditional = run(guidance=3.0), run(guidance=1.0)
  assert np.abs(guided - conditional).max() > 1e-3
  # (0, 1) is the old guided sampler, bit for bit, also when forced through the interval's condition.
  np.testing.assert_array_equal(run(guidance=3.0, guidance_interval=(0.0, 1.0)), guided)
  forced = flow._sample_fn(graphdef, 6, sampler, True, True)(
    state, noise, labels, jnp.float32(3.0), jnp.float32(0.0), jnp.float32(1.0)
  )
  np.testing.assert_array_equal(forced, guided)
  # An interval between the step times (0, 1/6, ..., 5/6, for Euler and Heun alike) guides nothing.
  np.testing.assert_array_equal(run(guidance=3.0, guidance_interval=(0.9, 0.95)), conditional)
  # Guided from t = 0.3 on: neither of the above, and what the step-by-step reference computes.
  part = run(guidance=3.0, guidance_interval=(0.3, 1.0))
  assert np.abs(part - guided).max() > 1e-4 and np.abs(part - conditional).max() > 1e-4
  model = nnx.merge(graphdef, state)
  model.eval()
  np.testing.assert_allclose(part, _reference_sample(model, noise, labels, 6, 3.0, (0.3, 1.0), sampler), atol=1e-6)
  middle = run(guidance=3.0, guidance_interval=(0.2, 0.6))
  np.testing.assert_allclose(middle, _reference_sample(model, noise, labels, 6, 3.0, (0.2, 0.6), sampler), atol=1e-6)
  assert np.abs(middle - part).max() > 1e-4


@pytest.mark.parametrize('sampler', flow.SAMPLERS)
def test_the_trajectory_is_the_samplers_path_ending_at_its_images(tiny_dit, sampler):
  graphdef, state = tiny_dit
  noise, labels = flow.noise_like(2, 3, 8), np.asarray([0, 1, 2])
  model = nnx.merge(graphdef, state)
  model.eval()
  for settings in (dict(guidance=1.0), dict(guidance=3.0), dict(guidance=3.0, guidance_interval=(0.2, 0.6))):
    t, x, v = flow.trajectory(graphdef, state, noise, labels, steps=4, sampler=sampler, **settings)
    assert t.shape == (5,) and x.shape == (5, 3, 8, 8, 3) and v.shape == (4, 3, 8, 8, 3)
    np.testing.assert_allclose(t, [0, 0.25, 0.5, 0.75, 1])
    np.testing.assert_array_equal(x[0], noise)
    images = flow.sample(graphdef, state, noise, labels, steps=4, sampler=sampler, **settings)
    np.testing.assert_array_equal(x[-1], images)  # The same steps, kept.
    for i in range(4):  # Each v is the (guided) velocity the step evaluated at (x_t, t).
      times = jnp.full((3,), t[i], jnp.float32)
      lo, hi = settings.get('guidance_interval', (0.0, 1.0))
      guidance = settings['guidance'] if lo <= t[i] <= hi else 1.0
      expected = flow.guided_velocity(model, jnp.asarray(x[i]), times, jnp.asarray(labels), guidance)
      np.testing.assert_allclose(v[i], expected, atol=1e-5)
      if sampler == 'euler':
        np.testing.assert_allclose(x[i + 1], x[i] + 0.25 * v[i], atol=1e-6)


def test_a_generators_trajectory_ends_at_its_samples(tiny_dit):
  import ml_collections

  from tinycats import Generator

  config = ml_collections.ConfigDict(
    dict(
      data=dict(classes=['a', 'b', 'c'], image_size=8, normalization='symmetric'),
      sample=dict(steps=3, guidance=2.0, sampler='heun', guidance_interval=(0.3, 1.0)),
    )
  )
  gen = Generator(config, *tiny_dit, step=0)
  t, x, v = gen.trajectory(['c', 0], seed=4)  # The run's sample.* settings, as sample uses them.
  assert t.shape == (4,) and x.shape == (4, 2, 8, 8, 3) and v.shape == (3, 2, 8, 8, 3)
  np.testing.assert_array_equal(augment.to_uint8(x[-1], 'symmetric'), gen.sample(['c', 0], seed=4))
  np.testing.assert_array_equal(x[0], flow.noise_like(4, 2, 8))


def test_outside_the_guidance_interval_only_the_conditional_batch_is_run():
  calls = []

  class Recording(nnx.Module):
    """A velocity x * t + label that logs each evaluation's batch size and time."""

    null_label = 3

    def __init__(self):
      self.scale = nnx.Param(jnp.ones(()))

    def __call__(self, x, t, y):
      jax.debug.callback(lambda t0: calls.append((x.shape[0], round(float(t0), 4))), t[0])
      return self.scale * x * t[:, None, None, None] + y[:, None, None, None]

  graphdef, state = nnx.split(Recording())
  noise, labels = flow.noise_like(0, 2, 4), np.asarray([0, 1])
  flow.sample(graphdef, state, noise, labels, steps=4, guidance=2.0, guidance_interval=(0.5, 1.0))
  jax.effects_barrier()
  assert sorted(calls) == [(2, 0.0), (2, 0.25), (4, 0.5), (4, 0.75)]  # Doubled (label + null) only inside.
  calls.clear()
  flow.sample(graphdef, state, noise, labels, steps=2, guidance=2.0, sampler='heun', guidance_interval=(0.0, 0.5))
  jax.effects_barrier()
  # Heun's t + dt checks its own time; its last step is Euler's: nothing is evaluated at t = 1.
  assert sorted(calls) == [(4, 0.0), (4, 0.5), (4, 0.5)]


@pytest.mark.parametrize('interval', [(0.5, 0.2), (-0.1, 0.5), (0.2, 1.5), (float('nan'), 1.0), (0.5,), 'ab', None])
def test_a_bad_guidance_interval_is_refused(tiny_dit, interval):
  graphdef, state = tiny_dit
  with pytest.raises(ValueError, match='guidance interval'):
    flow.sample(graphdef, state, flow.noise_like(0, 1, 8), [0], steps=2, guidance=2.0, guidance_interval=interval)


def test_ema_decay_ramps_up_to_its_ceiling():
  decays = [float(ema.ema_decay(step, 0.999)) for step in (0, 10, 100, 10**6)]
  assert decays[0] == pytest.approx(0.1) and decays[0] < decays[1] < decays[2] and decays[3] == pytest.approx(0.999)


def test_ema_update_moves_the_average_only():
  net = DiT(image_size=8, patch_size=4, width=16, depth=1, heads=2, num_classes=2, dtype=jnp.float32, rngs=nnx.Rngs(0))
  model = ema.EMAModel(net)
  before = nnx.to_pure_dict(nnx.state(model.ema, nnx.Param))
  nnx.update(model.net, jax.tree.map(lambda p: p + 1.0, nnx.state(model.net, nnx.Param)))
  ema.update_ema(model, 0.75)
  after = nnx.to_pure_dict(nnx.state(model.ema, nnx.Param))
  jax.tree.map(lambda a, b: np.testing.assert_allclose(a, b + 0.25, rtol=1e-6, atol=1e-6), after, before)
  # The optimizer's filter sees the network, never the average.
  assert 'ema' not in nnx.to_pure_dict(nnx.state(model, ema.TRAINABLE))


def test_symmetric_normalisation_round_trips_to_uint8():
  images = np.random.default_rng(4).integers(0, 256, (2, 6, 6, 3), dtype=np.uint8)
  sizes = np.full((2, 2), 6, np.int32)
  x = augment.eval_transform(jnp.asarray(images), sizes, image_size=6, crop_fraction=1.0, norm='symmetric')
  assert float(x.min()) >= -1 and float(x.max()) <= 1
  np.testing.assert_array_equal(augment.to_uint8(x, 'symmetric'), images)
  flipped = augment.flip_transform(
    jnp.asarray(images), sizes, jax.random.key(0), image_size=6, crop_fraction=1.0, flip=True
  )
  for i in range(2):  # Each image is either itself or its mirror.
    same, mirror = np.asarray(x[i]), np.asarray(x[i][:, ::-1])
    assert np.array_equal(flipped[i], same) or np.array_equal(flipped[i], mirror)


def test_classifiers_of_other_label_sets_are_mapped_onto_the_generators_labels():
  from tinycats.data import pets
  from tinycats.evaluators.samples import label_map

  classes = list(pets.CAT_BREEDS)
  kind, table = label_map(classes, classes)
  assert kind == 'class' and list(table) == list(range(13))
  kind, table = label_map(classes, list(pets.BREEDS))  # 37 breeds: every dog breed is 'other'.
  assert kind == 'class'
  assert [classes[i] for i in table] == [b if b[0].isupper() else 'other' for b in pets.BREEDS]
  assert label_map(classes, list(pets.SPECIES))[0] == 'species'
  with pytest.raises(ValueError, match='cannot be matched'):
    label_map(classes, ['car', 'plane'])
  with pytest.raises(ValueError, match='cannot be matched'):  # Digits are neither cats nor 'other'.
    label_map([str(d) for d in range(10)], list(pets.SPECIES))


class BrightIsCat:
  """A stand-in judge: 'cat' for bright images; its features are the per-channel means."""

  classes = ['cat', 'other']

  def embed(self, images):
    means = images.reshape(len(images), -1, 3).mean(1)
    cat = means.mean(1) > 127
    return np.stack([cat, ~cat], 1).astype(np.float32), means


def test_a_cat_other_judge_gives_species_accuracy_and_cat_rate():
  from tinycats.data import pets
  from tinycats.evaluators.samples import judge_samples

  labels = np.asarray([0, 5, 11, 12])  # Three cat breeds and 'other'.
  images = np.zeros((4, 4, 4, 3), np.uint8)
  images[[0, 1, 3]] = 255  # Judged cat, cat, (dark) other, cat.
  out = judge_samples(BrightIsCat(), images, labels, images, labels, list(pets.CAT_BREEDS))
  assert out['cat_rate'] == pytest.approx(2 / 3) and out['other_rate'] == 0.0
  assert out['species_accuracy'] == pytest.approx(2 / 4) and out['real'] == {
    'species_accuracy': 0.5,
    'cat_rate': pytest.approx(2 / 3),
    'other_rate': 0.0,
  }
  assert out['frechet_distance'] == pytest.approx(0.0, abs=1e-6)  # The same images.


def test_frechet_distance_weighs_the_real_classes_equally():
  from tinycats.evaluators.samples import judge_samples

  rng = np.random.default_rng(0)
  # Real: many images of class 0 (dark), few of class 1 (bright); samples: as many of each.
  real = np.concatenate([rng.integers(0, 60, (40, 4, 4, 3)), rng.integers(190, 255, (8, 4, 4, 3))]).astype(np.uint8)
  real_labels = np.asarray([0] * 40 + [1] * 8)
  samples = np.concatenate([rng.integers(0, 60, (24, 4, 4, 3)), rng.integers(190, 255, (24, 4, 4, 3))]).astype(np.uint8)
  labels = np.asarray([0] * 24 + [1] * 24)
  judge = BrightIsCat()
  judge.classes = ['a', 'b']
  balanced = judge_samples(judge, real, real_labels, samples, labels, ['a', 'b'])['frechet_distance']
  mixed = judge_samples(judge, real, np.zeros(48, int), samples, labels, ['a', 'b'])['frechet_distance']
  assert balanced < 0.1 * mixed  # Weighted, the real set looks like the samples; unweighted it does not.


class _CleanImagePredictor:
  """Stands for an x-predicting network that knows the data: x̂ = data, turned into a velocity as DiT does."""

  prediction, t_eps = 'x', 0.05

  def __init__(self, data):
    self.data = data

  def __call__(self, x_t, t, labels):
    gap = jnp.maximum(1 - t, self.t_eps).reshape(-1, 1, 1, 1)
    return (self.data - x_t) / gap


def test_x_prediction_target_is_the_velocity_until_t_eps_and_zero_loss_for_the_clean_image():
  rng = np.random.default_rng(0)
  data, noise = (jnp.asarray(rng.normal(size=(4, 4, 4, 3)).astype(np.float32)) for _ in range(2))
  t = jnp.asarray([0.0, 0.5, 0.95, 0.99])
  target = flow.target_velocity(data, noise, t, t_eps=0.05)
  np.testing.assert_allclose(target[:3], (data - noise)[:3], rtol=1e-6)
  # Past 1 - t_eps the gap is clipped: (data - x_t) / 0.05, smaller than data - noise by (1 - t) / 0.05.
  np.testing.assert_allclose(target[3], (data - noise)[3] * 0.01 / 0.05, rtol=1e-5)
  np.testing.assert_array_equal(flow.target_velocity(data, noise), data - noise)
  loss = flow.per_example_loss(_CleanImagePredictor(data), data, jnp.zeros(4, jnp.int32), noise, t)
  np.testing.assert_allclose(loss, 0.0, atol=1e-10)
  wrong = flow.per_example_loss(_CleanImagePredictor(data + 0.1), data, jnp.zeros(4, jnp.int32), noise, t)
  assert np.all(np.asarray(wrong) > 0)
