"""A run killed mid-way and started again ends where an uninterrupted run ends; divergence keeps the good checkpoint."""

import json
import os
import signal
import subprocess
import time

import numpy as np
import pytest
from conftest import REPO, dit_config, launch_local, tiny_config
from flax import nnx
from PIL import Image

from tinycats.config import ConfigError
from tinycats.train import loop, state as state_lib
from tinycats.train.checkpoint import Checkpoints
from tinycats.train.tasks import TASKS


def _launch_command(image_folder, workdir):
  return launch_local(
    image_folder,
    workdir,
    '--config.train.epochs=3',
    '--config.train.eval_every=3',
    '--config.train.keep_checkpoints=1',
  )


def _final_model_state(workdir, image_folder):
  config = tiny_config('--config.data.source=folder', f'--config.data.folder={image_folder}')
  task = TASKS['classifier'](config, ['cat', 'other'])
  latest = Checkpoints(os.path.join(workdir, 'checkpoints'), read_only=True).latest_step()
  _, model_state, _ = state_lib.restore_model(workdir, task, step=latest)
  return latest, {'.'.join(map(str, k)): np.asarray(v) for k, v in nnx.to_flat_state(model_state)}


def _committed_steps(workdir):
  root = os.path.join(workdir, 'checkpoints')
  return sorted(int(d) for d in os.listdir(root) if d.isdigit()) if os.path.isdir(root) else []


def test_killed_run_resumes_to_the_uninterrupted_result(image_folder, tmp_path):
  env = dict(os.environ)
  straight, interrupted = str(tmp_path / 'straight'), str(tmp_path / 'interrupted')
  subprocess.run(
    _launch_command(image_folder, straight), cwd=REPO, env=env, check=True, capture_output=True, timeout=300
  )

  process = subprocess.Popen(
    _launch_command(image_folder, interrupted), cwd=REPO, env=env, stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL
  )
  deadline = time.time() + 240
  while time.time() < deadline and process.poll() is None and len(_committed_steps(interrupted)) < 2:
    time.sleep(0.05)
  process.send_signal(signal.SIGKILL)
  process.wait()
  assert process.returncode == -signal.SIGKILL, 'the run finished before it could be killed'
  killed_at = _committed_steps(interrupted)
  total_steps = 3 * (160 // 16)
  assert killed_at and killed_at[-1] < total_steps

  result = subprocess.run(
    _launch_command(image_folder, interrupted), cwd=REPO, env=env, capture_output=True, text=True, timeout=300
  )
  assert result.returncode == 0, result.stderr[-3000:]
  assert 'resuming from step' in result.stderr

  step_a, params_a = _final_model_state(straight, image_folder)
  step_b, params_b = _final_model_state(interrupted, image_folder)
  assert step_a == step_b == total_steps
  assert params_a.keys() == params_b.keys()
  for name in params_a:
    np.testing.assert_allclose(params_a[name], params_b[name], rtol=1e-6, atol=1e-6, err_msg=name)

  # Rows logged after the checkpoint that was resumed are replaced, not duplicated.
  rows = [json.loads(line) for line in open(os.path.join(interrupted, 'metrics.jsonl'))]
  train_steps = [r['step'] for r in rows if 'train_loss' in r]
  assert train_steps == sorted(set(train_steps))
  assert json.load(open(os.path.join(interrupted, 'summary.json')))['steps'] == total_steps


def test_divergence_stops_and_keeps_the_last_good_checkpoint(image_folder, tmp_path):
  folder = ['--config.data.source=folder', f'--config.data.folder={image_folder}']
  loop.train_and_evaluate(tiny_config(*folder, '--config.train.epochs=1'), str(tmp_path))
  good = _committed_steps(str(tmp_path))
  assert good[-1] == 10
  config_json = (tmp_path / 'config.json').read_text()

  with pytest.raises(ConfigError, match='train.batch_size: 16 -> 8'):
    loop.train_and_evaluate(tiny_config(*folder, '--config.train.batch_size=8'), str(tmp_path))
  assert (tmp_path / 'config.json').read_text() == config_json  # The workdir's truth is untouched.

  diverging = tiny_config(*folder, '--config.train.epochs=2', '--config.train.learning_rate=1e30')
  with pytest.raises(loop.TrainingDiverged, match=r'became (nan|inf) at step 1[1-9].*resumes from step 10 .*val_loss'):
    loop.train_and_evaluate(diverging, str(tmp_path))
  assert _committed_steps(str(tmp_path)) == good


def test_a_blown_up_generator_stops_before_any_checkpoint_and_says_it_starts_over(shape_folder, tmp_path):
  # Gradient clipping keeps the loss finite for a while; the gradient norm (before the clip) shows it first.
  config = dit_config(shape_folder, '--config.train.learning_rate=1e4', '--config.train.steps=60')
  with pytest.raises(loop.TrainingDiverged, match=r'became (nan|inf) at step \d+; stopped. No checkpoint was'):
    loop.train_and_evaluate(config, str(tmp_path))
  assert not _committed_steps(str(tmp_path))


def test_an_infinite_learning_rate_is_refused_with_the_config_checks():
  with pytest.raises(ConfigError, match="'train.learning_rate' must be a finite number, got inf"):
    tiny_config('--config.train.learning_rate=inf')


def _scripted_validation(monkeypatch, scores):
  """Validation whose balanced accuracy is `scores` in turn (and plain accuracy the opposite): the loop's
  stopping and best-step logic under test."""
  from tinycats.train.tasks.classifier import ClassifierTask

  calls = iter(scores)

  def validate(self, *args):
    score = next(calls)
    return {'val_accuracy': 1.0 - score, 'val_balanced_accuracy': score, 'val_loss': 0.0}

  monkeypatch.setattr(ClassifierTask, 'validate', validate)


def test_early_stop_and_a_restart_that_respects_it(image_folder, tmp_path, monkeypatch):
  _scripted_validation(monkeypatch, [0.5, 0.7, 0.6, 0.7, 0.9, 1.0])
  config = tiny_config(
    '--config.data.source=folder', f'--config.data.folder={image_folder}', '--config.train.patience=2'
  )
  summary = loop.train_and_evaluate(config, str(tmp_path))
  # 0.7 at step 20 is not beaten by 0.6 (step 30) nor equalled-only by 0.7 (step 40): patience 2 runs out.
  assert summary['stopped_early'] and summary['steps'] == 40 and summary['total_steps'] == 60
  # Balanced accuracy chooses (plain accuracy would pick step 10); ties go to the later checkpoint, as
  # Orbax's best_step does, and evaluation used that one.
  assert summary['metric'] == 'val_balanced_accuracy' and summary['best_step'] == 40 and summary['best'] == 0.7
  assert Checkpoints(str(tmp_path / 'checkpoints'), read_only=True).best_step() == 40
  assert json.load(open(tmp_path / 'eval.json'))['step'] == 40
  assert 40 in _committed_steps(str(tmp_path))

  again = loop.train_and_evaluate(config, str(tmp_path))  # Restarting a stopped run trains no further.
  assert again['steps'] == 40 and again['stopped_early']


def test_of_equal_scores_orbax_keeps_and_restores_the_later_step(tmp_path):
  """The rule the loop's own best_step follows (loop.py), checked against Orbax itself."""
  ckpts = Checkpoints(str(tmp_path / 'checkpoints'), keep=1)
  for step, score in ((1, 0.5), (2, 0.8), (3, 0.8), (4, 0.6)):
    ckpts.save(
      step,
      {'model': {'w': np.full(2, step, np.float32)}},
      {'step': step},
      metrics={'val_balanced_accuracy': score, 'val_accuracy': 1.0 - score, 'val_loss': 0.0},
    )
  ckpts.save(5, {'model': {'w': np.zeros(2, np.float32)}}, {'step': 5}, metrics={'val_accuracy': 1.0})
  ckpts.wait()
  assert ckpts.best_step() == 3  # Not 2 (an equal, earlier score), nor 5 (saved without the metric).
  ckpts.close()
  assert _committed_steps(str(tmp_path)) == [3, 5]  # The latest (keep=1) and the best.
  assert Checkpoints(str(tmp_path / 'checkpoints'), read_only=True).best_step() == 3  # Read back from disk.


def test_resuming_with_other_settings_is_refused(image_folder, tmp_path):
  folder = ['--config.data.source=folder', f'--config.data.folder={image_folder}']
  loop.train_and_evaluate(tiny_config(*folder, '--config.train.epochs=1'), str(tmp_path))
  saved = (tmp_path / 'config.json').read_text()
  with pytest.raises(ConfigError, match=r'data.split_seed: 0 -> 3\n  seed: 0 -> 1\n'):
    loop.train_and_evaluate(tiny_config(*folder, '--config.seed=1', '--config.data.split_seed=3'), str(tmp_path))
  assert (tmp_path / 'config.json').read_text() == saved
  # More epochs, another patience or where batches are gathered may change: the run goes on from step 10,
  # now fed from the host (the first part gathered its batches on the device).
  summary = loop.train_and_evaluate(
    tiny_config(*folder, '--config.train.epochs=2', '--config.train.patience=5', '--config.data.device_cache_gb=0'),
    str(tmp_path),
  )
  assert summary['steps'] == 20


def test_resuming_on_a_folder_that_gained_images_is_refused(tmp_path):
  import fake_pets

  root = tmp_path / 'images'
  fake_pets.make_image_folder(str(root), per_class=20, size=16)
  config = tiny_config(
    '--config.data.source=folder',
    f'--config.data.folder={root}',
    '--config.train.epochs=1',
    '--config.train.batch_size=8',
    '--config.data.val_min_per_class=0',
  )
  loop.train_and_evaluate(config, str(tmp_path / 'run'))
  for path in (root / 'cat').iterdir():  # Other pictures under the same names: the count alone cannot tell.
    Image.open(path).transpose(Image.Transpose.ROTATE_90).save(path)
  with pytest.raises(ConfigError, match=r'trained on other training images than the data now holds \(the same count'):
    loop.train_and_evaluate(config, str(tmp_path / 'run'))
  rng = np.random.default_rng(1)
  for i in range(10):
    Image.fromarray(fake_pets.pet_image(rng, True, (16, 16))).save(root / 'cat' / f'new{i}.jpg')
  with pytest.raises(ConfigError, match=r'trained on 32 training images, the data now has 40'):
    loop.train_and_evaluate(config, str(tmp_path / 'run'))
  (root / 'renamed').mkdir()
  for path in (root / 'other').iterdir():
    path.rename(root / 'renamed' / path.name)
  (root / 'other').rmdir()
  with pytest.raises(ConfigError, match=r"data.classes: \['cat', 'other'\] -> \['cat', 'renamed'\]"):
    loop.train_and_evaluate(config, str(tmp_path / 'run'))
