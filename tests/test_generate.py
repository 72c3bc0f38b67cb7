"""End to end: a tiny DiT learns four shapes in random colours, a classifier judges its samples, it resumes exactly."""

import json
import os

import numpy as np
import pytest
from conftest import dit_config, run_main
from flax import nnx
from PIL import Image

from tinycats import Classifier, Generator, cli, evaluate
from tinycats.errors import UserError
from tinycats.evaluators import flow_loss, samples
from tinycats.train import loop, state as state_lib
from tinycats.train.checkpoint import Checkpoints
from tinycats.train.tasks import TASKS


def test_generator_trains_and_leaves_its_files(generator_run):
  workdir, summary = generator_run
  assert summary['metric'] == 'val_loss' and summary['steps'] == summary['total_steps'] == 400
  for name in (
    'config.json',
    'metrics.jsonl',
    'eval.json',
    'summary.json',
    'samples/step_100.png',
    f'samples/step_{summary["steps"]}.png',
  ):
    assert os.path.isfile(os.path.join(workdir, name)), name
  rows = [json.loads(line) for line in open(os.path.join(workdir, 'metrics.jsonl'))]
  losses = [r['train_loss'] for r in rows if 'train_loss' in r]
  assert losses[-1] < 0.5 * losses[0], losses
  report = json.load(open(os.path.join(workdir, 'eval.json')))
  # The loss is taken at the training's own times, where much of it is what no model can know (the picture under
  # heavy noise): this tiny run reaches about a third of the fresh network's; a broken one stays near all of it.
  assert report['split'] == 'test' and report['flow_loss'] == summary['test_flow_loss'] < 0.5 * _untrained_loss(workdir)
  grid = np.asarray(Image.open(os.path.join(workdir, 'samples', f'step_{summary["steps"]}.png')))
  assert grid.shape[0] >= 4 * 16 and grid.std() > 10  # Four rows of images, not a blank canvas.


def _untrained_loss(workdir):
  """The test split's flow loss of the run's network with fresh weights (x-prediction: x̂ = 0), as eval.json's."""
  import tinycats.data
  from tinycats import sharding, stored_config

  config = stored_config.load_json(os.path.join(workdir, 'config.json'))
  task = TASKS[config.task](config, list(config.data.classes))
  graphdef, state = task.network(*nnx.split(task.create_model(config.seed)))
  split = tinycats.data.load(config, splits=('test',)).splits['test']
  return flow_loss.validation_loss(config, graphdef, state, split, sharding.make_mesh())


def test_ema_weights_differ_from_the_network_and_are_the_ones_used(generator_run):
  workdir, summary = generator_run
  config = Generator.load(workdir).config
  task = TASKS['generator'](config, list(config.data.classes))
  _, model_state, step = state_lib.restore_model(workdir, task)
  stored = nnx.to_pure_dict(model_state)
  net, ema = stored['net'], stored['ema']
  kernel = lambda tree: np.asarray(tree['final_layer']['linear']['kernel'])
  assert np.abs(kernel(net) - kernel(ema)).max() > 1e-4
  generator = Generator.load(workdir)
  used = nnx.to_pure_dict(generator._state)
  np.testing.assert_array_equal(kernel(used), kernel(ema))
  assert generator.step == step == summary['best_step']


def test_samples_are_judged_by_a_classifier(generator_run, judge):
  """The judging machinery: samples of every class scored beside the real test images.

  How well the smoke recipe's samples show their class is measured by `tinycats bench --quality
  generator` (BENCHMARKS.md), with a judge trained for minutes: a judge trained in seconds on
  pictures told apart only by shape knows them too little to grade a generator against a threshold.
  """
  workdir, _ = generator_run
  report = evaluate.evaluate(workdir, split='test', classifier=judge, samples_per_class=8, seed=0)
  samples = report['samples']
  assert samples['real']['conditional_accuracy'] > 0.25  # Chance; the judge has learnt something.
  assert 0 <= samples['conditional_accuracy'] <= 1 and set(samples['per_class_accuracy']) == {
    'circle',
    'cross',
    'square',
    'triangle',
  }
  assert samples['num_generated'] == 32 and samples['frechet_distance'] >= 0
  assert samples['blockiness'] > 0 and samples['real']['blockiness'] > 0  # Patch 4 at 16 px: a grid to measure.
  assert os.path.isfile(os.path.join(workdir, 'samples', 'eval.png'))
  assert json.load(open(os.path.join(workdir, 'eval.json')))['samples'] == samples
  settings = lambda s: (s['guidance'], s['steps'], s['sampler'], s['guidance_interval'])
  assert settings(samples) == (2.0, 10, 'euler', [0.25, 0.8])  # The run's sample.*.
  # Another kept checkpoint (`--step`): its own report and grid; the best's stay as they were.
  kept = sorted(int(d) for d in os.listdir(os.path.join(workdir, 'checkpoints')) if d.isdigit())
  other = next(s for s in reversed(kept) if s != report['step'])
  grid = open(os.path.join(workdir, 'samples', 'eval.png'), 'rb').read()
  chosen = evaluate.evaluate(workdir, classifier=judge, samples_per_class=2, step=other)
  assert (chosen['step'], chosen['checkpoint']) == (other, 'chosen') and chosen['samples']['num_generated'] == 8
  assert os.path.isfile(os.path.join(workdir, 'samples', f'eval_step{other}.png'))
  assert open(os.path.join(workdir, 'samples', 'eval.png'), 'rb').read() == grid
  assert json.load(open(os.path.join(workdir, 'eval.json')))['samples'] == samples
  # The validation split's judged grid is the validation's, as its report is: the test's stays.
  evaluate.evaluate(workdir, split='val', classifier=judge, samples_per_class=2)
  assert os.path.isfile(os.path.join(workdir, 'samples', 'eval_val.png'))
  assert open(os.path.join(workdir, 'samples', 'eval.png'), 'rb').read() == grid

  # Other guidance, steps, sampler and interval for the judged samples, recorded with them; only with a judge.
  other = evaluate.evaluate(
    workdir, classifier=judge, samples_per_class=2, guidance=4.0, steps=3, sampler='heun', guidance_interval=(0.2, 1.0)
  )
  assert settings(other['samples']) == (4.0, 3, 'heun', [0.2, 1.0])
  for flag, value in (('--guidance', '4'), ('--guidance-interval', '0.1,1')):
    refused = run_main(cli.main, 'evaluate', '--workdir', workdir, flag, value)
    assert refused.returncode == 2 and 'give --classifier DIR too' in refused.stderr


def test_pure_noise_scores_worse_than_real_images_on_every_metric(generator_run, judge):
  workdir, _ = generator_run
  config = Generator.load(workdir).config
  import tinycats.data

  data = tinycats.data.load(config, splits=('val', 'test'))
  real, other_real = data.splits['test'], data.splits['val']
  classifier = Classifier.load(judge)
  rng = np.random.default_rng(0)
  pixels, other_pixels = (samples.real_images(config, split) for split in (real, other_real))  # As judged.
  noise = rng.integers(0, 256, other_pixels.shape, dtype=np.uint8)
  as_real = samples.judge_samples(
    classifier, pixels, real.labels, other_pixels, other_real.labels, list(config.data.classes)
  )
  as_noise = samples.judge_samples(classifier, pixels, real.labels, noise, other_real.labels, list(config.data.classes))
  assert as_real['conditional_accuracy'] > as_noise['conditional_accuracy']
  assert as_noise['frechet_distance'] > 3 * as_real['frechet_distance']
  # The flow loss of the trained model beats an untrained (zero-output) one on the same draws.
  trained = json.load(open(os.path.join(workdir, 'eval.json')))['flow_loss']
  task = TASKS['generator'](config, list(config.data.classes))
  from tinycats import sharding

  fresh = nnx.split(task.create_model(0).ema)
  untrained = flow_loss.validation_loss(config, *fresh, real, sharding.make_mesh())
  assert trained < 0.5 * untrained


def test_sample_command_writes_grids_and_single_images(generator_run, tmp_path):
  workdir, _ = generator_run
  grid_path, out_dir = str(tmp_path / 'grid.png'), str(tmp_path / 'single')
  result = run_main(
    cli.main,
    'sample',
    '--workdir',
    workdir,
    '--label',
    'circle',
    '--label',
    '2',
    '--num',
    '3',
    '--steps',
    '4',
    '--guidance',
    '1.5',
    '--seed',
    '1',
    '--out',
    grid_path,
    '--out-dir',
    out_dir,
  )
  assert result.returncode == 0, result.stderr[-3000:]
  assert json.loads(result.stdout)['labels'] == ['circle', 'square']
  assert len(os.listdir(out_dir)) == 6 and os.path.isfile(grid_path)
  single = np.asarray(Image.open(os.path.join(out_dir, sorted(os.listdir(out_dir))[0])))
  assert single.shape == (16, 16, 3)

  bad = run_main(cli.main, 'sample', '--workdir', workdir, '--label', 'zebra', '--out', grid_path)
  assert bad.returncode == 2 and "unknown label 'zebra'" in bad.stderr


def test_sample_command_takes_a_guidance_interval(generator_run, tmp_path):
  """--guidance-interval LO,HI guides only the steps with LO <= t <= HI; bad values are one line, exit 2."""
  workdir, _ = generator_run
  sample = lambda *extra: run_main(
    cli.main, 'sample', '--workdir', workdir, '--num', '2', '--steps', '6', '--guidance', '4', '--seed', '3', *extra
  )

  def grid(*extra):
    path = str(tmp_path / f'grid{len(os.listdir(tmp_path))}.png')
    result = sample('--out', path, *extra)
    assert result.returncode == 0, result.stderr[-3000:]
    return np.asarray(Image.open(path)).astype(int)

  np.testing.assert_array_equal(grid(), grid('--guidance-interval', '0.25,0.8'))  # The run's sample.guidance_interval.
  everywhere = grid('--guidance-interval', '0,1')
  assert np.abs(grid() - everywhere).max() > 2
  late = grid('--guidance-interval', '0.5,1')  # Guided at t = 3/6, 4/6, 5/6 only.
  assert np.abs(late - everywhere).max() > 2
  # Between the step times (0, 1/6, ..., 5/6): no step is guided, the conditional model's images.
  np.testing.assert_array_equal(grid('--guidance-interval', '0.9,0.95'), grid('--guidance', '1'))
  for bad in ('0.5', '0.6,0.2', '0,2', 'a,b', '0.1,0.5,1'):
    result = sample('--guidance-interval', bad, '--out', str(tmp_path / 'bad.png'))
    assert result.returncode == 2 and '--guidance-interval takes LO,HI' in result.stderr, (bad, result.stderr)
    assert len(result.stderr.strip().splitlines()) == 1 and not os.path.exists(tmp_path / 'bad.png')
  with pytest.raises(UserError, match='guidance interval'):
    Generator.load(workdir).sample([0], guidance_interval=(0.5, 0.1))


def test_generator_library_api(generator_run, judge):
  workdir, _ = generator_run
  generator = Generator.load(workdir)
  images = generator.sample(['cross', 3, 'square'], steps=4, guidance=1.5, seed=3)
  assert images.shape == (3, 16, 16, 3) and images.dtype == np.uint8
  np.testing.assert_array_equal(images, generator.sample(['cross', 3, 'square'], steps=4, guidance=1.5, seed=3))
  with pytest.raises(TypeError, match='cfg= is now guidance='):  # The old keyword, for one release.
    generator.sample(['cross'], cfg=1.5)
  # Batching does not change a sample: each one's noise comes from the seed, not the batch. Another batch
  # shape is another compiled program, so float rounding may move a pixel by a level or two.
  diff = np.abs(
    images.astype(int) - generator.sample(['cross', 3, 'square'], steps=4, guidance=1.5, seed=3, batch_size=2)
  )
  assert diff.max() <= 3 and diff.mean() < 0.5  # Other noise would differ by tens of levels.
  with pytest.raises(UserError, match='out of range'):
    generator.sample([7])
  with pytest.raises(UserError, match='not a generator'):
    Generator.load(judge)
  with pytest.raises(UserError, match='not a classifier'):
    Classifier.load(workdir)


def test_generator_resumes_to_the_uninterrupted_result(shape_folder, tmp_path, monkeypatch):
  """Interrupted right after its step-8 checkpoint, the run resumes there (EMA and all) and ends identically."""
  short = ['--config.train.steps=16', '--config.train.eval_every=4']
  straight, resumed = str(tmp_path / 'straight'), str(tmp_path / 'resumed')
  loop.train_and_evaluate(dit_config(shape_folder, *short), straight)

  save = Checkpoints.save

  def save_then_stop(self, step, *args, **kwargs):
    save(self, step, *args, **kwargs)
    if step == 8:
      raise KeyboardInterrupt  # As if the machine went away; the loop still finishes the save.

  with monkeypatch.context() as patch:
    patch.setattr(Checkpoints, 'save', save_then_stop)
    with pytest.raises(KeyboardInterrupt):
      loop.train_and_evaluate(dit_config(shape_folder, *short), resumed)
  assert Checkpoints(os.path.join(resumed, 'checkpoints'), read_only=True).latest_step() == 8
  loop.train_and_evaluate(dit_config(shape_folder, *short), resumed)

  def final(workdir):
    config = Generator.load(workdir).config
    task = TASKS['generator'](config, list(config.data.classes))
    latest = Checkpoints(os.path.join(workdir, 'checkpoints'), read_only=True).latest_step()
    _, state, _ = state_lib.restore_model(workdir, task, step=latest)
    return {'.'.join(map(str, k)): np.asarray(v) for k, v in nnx.to_flat_state(state)}

  a, b = final(straight), final(resumed)
  assert a.keys() == b.keys() and any(k.startswith('ema.') for k in a)
  for key in a:
    np.testing.assert_allclose(a[key], b[key], atol=1e-6, err_msg=key)
