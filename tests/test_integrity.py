"""Integrity under abuse: links planted in a workdir are never written through, a damaged cache or changed data
is found, and a workdir or data folder that cannot be used is one line."""

import fcntl
import json
import os
import shutil
import subprocess

import numpy as np
import pytest
from conftest import LEARNING, REPO, run_main, tiny_config
from PIL import Image, ImageOps

import tinycats.data
from tinycats import cli, files
from tinycats.config import ConfigError
from tinycats.data import cache
from tinycats.errors import UserError
from tinycats.train import lock, loop

OUTSIDE = 'a file outside the workdir\n'


@pytest.fixture
def trained(folder_run, tmp_path):
  """A copy of the session's tiny classifier run, free to plant links in."""
  workdir = str(tmp_path / 'run')
  shutil.copytree(folder_run[0], workdir, ignore=shutil.ignore_patterns(lock.LOCK))
  return workdir


def _plant(workdir, tmp_path, names):
  """Makes each name in `workdir` a symlink to its own file outside it; returns {outside path: name}."""
  outside = {}
  for name in names:
    target = tmp_path / f'outside-{name}'
    target.write_text(OUTSIDE)
    path = os.path.join(workdir, name)
    if os.path.lexists(path):
      os.remove(path)
    os.symlink(target, path)
    outside[str(target)] = name
  return outside


def test_a_resume_and_evaluate_replace_planted_links_and_leave_their_targets_alone(trained, learning_folder, tmp_path):
  names = ['curves.png', 'confusion.png', 'eval.json', 'summary.json', 'summary.json.tmp', 'eval.json.tmp']
  outside = _plant(trained, tmp_path, names)
  config = tiny_config('--config.data.source=folder', f'--config.data.folder={learning_folder}', *LEARNING)
  loop.train_and_evaluate(config, trained)  # Resumes at its last step: tests, writes eval, curves, summary.
  assert run_main(cli.main, 'evaluate', '--workdir', trained, '--split', 'val').returncode == 0
  for target, name in outside.items():
    assert open(target).read() == OUTSIDE, f'{name} was written through'
  for name in ('curves.png', 'confusion.png', 'eval.json', 'summary.json'):
    assert os.path.isfile(os.path.join(trained, name)) and not os.path.islink(os.path.join(trained, name))
  assert not [n for n in os.listdir(trained) if n.endswith('.tmp') and not os.path.islink(os.path.join(trained, n))]


@pytest.mark.parametrize('name', ['metrics.jsonl', 'checkpoints', 'samples', lock.LOCK])
def test_a_link_where_a_run_appends_or_writes_inside_is_refused_in_one_line(trained, learning_folder, tmp_path, name):
  path = os.path.join(trained, name)
  elsewhere = tmp_path / 'elsewhere'
  if os.path.isdir(path):  # A folder: moved out, and linked back in, as a shared volume might be.
    shutil.move(path, elsewhere)
  else:
    elsewhere.write_text(OUTSIDE)
    if os.path.lexists(path):
      os.remove(path)
  os.symlink(elsewhere, path)
  before = sorted(os.listdir(elsewhere)) if elsewhere.is_dir() else elsewhere.read_text()
  config = tiny_config('--config.data.source=folder', f'--config.data.folder={learning_folder}', *LEARNING)
  with pytest.raises(files.LinkedPath, match=f'{name} is a symlink .* will not follow it'):
    loop.train_and_evaluate(config, trained)
  after = sorted(os.listdir(elsewhere)) if elsewhere.is_dir() else elsewhere.read_text()
  assert after == before


def test_evaluate_refuses_a_linked_samples_folder_in_one_line(generator_run, tmp_path):
  workdir = str(tmp_path / 'gen')
  shutil.copytree(generator_run[0], workdir, ignore=shutil.ignore_patterns(lock.LOCK))
  shutil.rmtree(os.path.join(workdir, 'samples'))
  os.symlink(tmp_path, os.path.join(workdir, 'samples'))
  result = run_main(cli.main, 'evaluate', '--workdir', workdir)
  assert result.returncode == 2
  (line,) = result.stderr.strip().splitlines()
  assert 'samples is a symlink' in line


def test_atomic_write_leaves_the_old_file_on_a_failure_and_no_temporary(tmp_path):
  path = tmp_path / 'a.json'
  path.write_text('old')
  with pytest.raises(RuntimeError), files.atomic_write(str(path)) as f:
    f.write('half')
    raise RuntimeError
  assert path.read_text() == 'old' and os.listdir(tmp_path) == ['a.json']


def test_append_line_never_follows_a_link(tmp_path):
  target = tmp_path / 'target'
  target.write_text(OUTSIDE)
  os.symlink(target, tmp_path / 'metrics.jsonl')
  with pytest.raises(files.LinkedPath):
    files.append_line(str(tmp_path / 'metrics.jsonl'), '{}\n')
  assert target.read_text() == OUTSIDE
  files.append_line(str(tmp_path / 'new.jsonl'), 'a\n')
  files.append_line(str(tmp_path / 'new.jsonl'), 'b\n')
  assert (tmp_path / 'new.jsonl').read_text() == 'a\nb\n'


def test_a_workdir_that_is_a_file_is_one_line_and_the_file_is_untouched(tmp_path):
  path = tmp_path / 'notes.txt'
  path.write_text(OUTSIDE)
  config = os.path.join(REPO, 'configs', 'cats.py') + ':smoke'
  result = run_main(cli.main, 'train', '--config', config, '--workdir', str(path))
  assert result.returncode == 2
  line = result.stderr.strip().splitlines()[-1]
  assert 'is a file, not a folder' in line and path.read_text() == OUTSIDE


def test_an_image_size_a_resnet_cannot_use_is_refused():
  with pytest.raises(ConfigError, match=r'data.image_size \(7\) is below 32'):
    tiny_config('--config.data.image_size=7', '--config.data.cache_size=8')


def test_a_read_only_checkpoint_folder_is_one_line_before_the_first_step(learning_folder, tmp_path):
  checkpoints = tmp_path / 'run' / 'checkpoints'
  checkpoints.mkdir(parents=True)
  if (
    os.geteuid() != 0
    or subprocess.run(['mount', '-t', 'tmpfs', '-o', 'ro,size=64k', 'tmpfs', str(checkpoints)]).returncode
  ):
    pytest.skip('needs root to mount a read-only tmpfs (root writes through chmod)')
  try:
    config = tiny_config('--config.data.source=folder', f'--config.data.folder={learning_folder}', *LEARNING)
    with pytest.raises(UserError, match=r'checkpoints cannot be written \(Read-only file system\)'):
      loop.train_and_evaluate(config, str(tmp_path / 'run'))
    assert not os.path.exists(tmp_path / 'run' / 'metrics.jsonl')  # Refused before the first step.
  finally:
    subprocess.run(['umount', '-l', str(checkpoints)])


# The data: a damaged cache, a changed folder, builds killed mid-way.


@pytest.fixture
def folder_data(tmp_path):
  """(config, image folder, cache folder): a small two-class folder of its own, free to edit."""
  import fake_pets

  root = str(tmp_path / 'pictures')
  fake_pets.make_image_folder(root, per_class=20, size=40)
  cache_dir = str(tmp_path / 'cache')
  config = tiny_config(
    '--config.data.source=folder',
    f'--config.data.folder={root}',
    f'--config.data.cache_dir={cache_dir}',
    '--config.data.val_min_per_class=2',
  )
  return config, root, cache_dir


def _cache_folders(cache_dir, split):
  return sorted(os.path.join(cache_dir, n) for n in os.listdir(cache_dir) if f'-{split}-' in n)


@pytest.mark.parametrize('how', ['random bytes', 'truncated images', 'truncated meta'])
def test_a_damaged_cache_is_found_and_decoded_again(folder_data, how):
  config, _, cache_dir = folder_data
  first = np.array(tinycats.data.load(config).splits['train'].images)  # A copy: the cache is memory-mapped.
  (train,) = _cache_folders(cache_dir, 'train')
  images = os.path.join(train, 'images.npy')
  if how == 'random bytes':  # Past the .npy header: the array's values, not its shape.
    with open(images, 'r+b') as f:
      f.seek(200)
      f.write(np.random.default_rng(0).bytes(20_000))
  elif how == 'truncated images':
    os.truncate(images, os.path.getsize(images) // 2)
  else:
    os.truncate(os.path.join(train, 'meta.json'), 10)
  with pytest.warns(UserWarning, match=rf'the cache {train} is damaged: .*decoding the pictures again'):
    again = tinycats.data.load(config)
  np.testing.assert_array_equal(again.splits['train'].images, first)
  assert _cache_folders(cache_dir, 'train') == [train]  # Rebuilt in place; the damaged copy is gone.


def test_pictures_edited_with_their_times_restored_make_a_new_cache(folder_data):
  config, root, cache_dir = folder_data
  first = tinycats.data.load(config)
  first_train = np.array(first.splits['train'].images)
  for folder, _, names in os.walk(root):
    for name in names:
      path = os.path.join(folder, name)
      stat = os.stat(path)
      with Image.open(path) as image:
        ImageOps.flip(ImageOps.invert(image.convert('RGB'))).save(path, format='JPEG', quality=95)
      os.utime(path, ns=(stat.st_atime_ns, stat.st_mtime_ns))
  again = tinycats.data.load(config)
  assert not np.array_equal(again.splits['train'].images, first_train)
  assert again.splits['test'].source_digest != first.splits['test'].source_digest


def test_evaluate_refuses_a_test_split_drawn_again_from_changed_pictures(trained, learning_folder, tmp_path):
  # The run's own data, copied elsewhere: the same pictures, so evaluate runs (the record travels with the run).
  pictures = str(tmp_path / 'pictures')
  shutil.copytree(learning_folder, pictures, ignore=shutil.ignore_patterns('.tinycats-cache'))
  stored = json.load(open(os.path.join(trained, 'config.json')))
  stored['data']['folder'] = pictures
  json.dump(stored, open(os.path.join(trained, 'config.json'), 'w'))
  assert run_main(cli.main, 'evaluate', '--workdir', trained).returncode == 0
  cat = os.path.join(pictures, 'cat')
  for i in range(5):  # Five more cats: the folder is split again by its new listing.
    shutil.copy(os.path.join(cat, '0.jpg'), os.path.join(cat, f'extra-{i}.jpg'))
  before = open(os.path.join(trained, 'eval.json')).read()
  result = run_main(cli.main, 'evaluate', '--workdir', trained)
  assert result.returncode == 2
  line = result.stderr.strip().splitlines()[-1]
  assert 'the test split of the data is not the one' in line and 'Restore the data' in line
  assert open(os.path.join(trained, 'eval.json')).read() == before


def test_a_same_count_replacement_is_another_split(folder_data, tmp_path):
  config, root, _ = folder_data
  data = tinycats.data.load(config)
  workdir = str(tmp_path / 'run')
  os.makedirs(workdir)
  tinycats.data.record(data, workdir)
  tinycats.data.check_record(tinycats.data.load(config), workdir)  # Unchanged: accepted.
  test_picture = os.path.join(root, data.splits['test'].names[0])
  other = os.path.join(root, data.splits['train'].names[0])
  shutil.copy(other, test_picture)  # Same names, same count, another picture.
  with pytest.raises(UserError, match='the test split of the data is not the one'):
    tinycats.data.check_record(tinycats.data.load(config), workdir)


def test_folders_left_by_killed_cache_builds_are_removed_and_a_running_build_is_not(folder_data):
  config, _, cache_dir = folder_data
  tinycats.data.load(config)
  (train,) = _cache_folders(cache_dir, 'train')
  killed = train + cache.BUILDING + 'dead0000'
  os.makedirs(killed)
  open(os.path.join(killed, 'images.npy'), 'wb').write(b'\0' * 1000)
  running = train + cache.BUILDING + 'live0000'
  os.makedirs(running)
  with open(running + files.BUSY, 'w') as held:  # Its process is alive: it holds the lock beside it.
    fcntl.flock(held, fcntl.LOCK_EX)
    tinycats.data.load(config)
    assert not os.path.exists(killed) and os.path.exists(running)
  tinycats.data.load(config)  # Its process is gone: the lock is free.
  assert not os.path.exists(running) and not os.path.exists(running + files.BUSY)


def _named_onnx_files(out):
  """Every .onnx file models.json names."""
  found = []

  def walk(value):
    if isinstance(value, dict):
      for v in value.values():
        walk(v)
    elif isinstance(value, list):
      for v in value:
        walk(v)
    elif isinstance(value, str) and value.endswith('.onnx'):
      found.append(value)

  walk(json.load(open(os.path.join(out, 'models.json'))))
  return found


def test_an_export_killed_anywhere_leaves_a_folder_whose_models_json_names_only_files_it_has(
  folder_run, tmp_path, monkeypatch
):
  from tinycats.export import folders, onnx as onnx_export

  out = str(tmp_path / 'out')
  dead = os.path.join(out, folders.STAGING + 'dead1234')  # What an export killed with -9 left.
  os.makedirs(dead)
  open(os.path.join(dead, 'cats.onnx'), 'wb').write(b'\0' * 1000)
  onnx_export.export_onnx(folder_run[0], out, int8=True)
  assert not [n for n in os.listdir(out) if n.startswith('.')]  # The killed export's folder is gone too.

  def killed(path):  # The process dies as it removes the older int8 model.
    raise KeyboardInterrupt

  monkeypatch.setattr(onnx_export.os, 'remove', killed)
  with pytest.raises(KeyboardInterrupt):
    onnx_export.export_onnx(folder_run[0], out)
  named = _named_onnx_files(out)
  assert named and all(os.path.isfile(os.path.join(out, os.path.basename(n))) for n in named)
  assert not any('quantized' in n for n in named)
