"""A workdir as an attack surface: names in it made symlinks to files elsewhere are never written through."""

import os
import shutil
import subprocess

import pytest
from conftest import LEARNING, REPO, run_main, tiny_config

from tinycats import cli, files
from tinycats.config import ConfigError
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
