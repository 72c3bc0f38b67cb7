"""Faults and odd inputs that a user can fix end in one line with the way out and exit 2, never a traceback."""

import errno
import os
import subprocess

import numpy as np
import pytest
from conftest import TINY, run_main
from PIL import Image

from launch import modal_train
from tinycats import cli, errors
from tinycats.data import pets
from tinycats.errors import USER_ERROR


def _one_line(result, *expected: str) -> str:
  """The error line of a refused command, after checking that it is the only line and names `expected`."""
  assert result.returncode == USER_ERROR, result.stderr[-3000:]
  lines = [line for line in result.stderr.splitlines() if ': error: ' in line]
  assert len(lines) == 1 and 'Traceback' not in result.stderr, result.stderr[-3000:]
  for text in expected:
    assert text in lines[0], lines[0]
  return lines[0]


def test_an_unknown_config_argument_names_the_known_ones():
  result = run_main(cli.main, 'train', '--config', 'configs/cats.py:bogus', '--workdir', 'unused')
  _one_line(result, "unknown config argument 'bogus'", "'smoke', 'scratch' or nothing")


def test_a_bare_word_for_a_list_field_says_how_to_write_it():
  line = _one_line(
    run_main(cli.main, 'train', '--config', 'configs/cats.py', '--config.data.classes=abc', '--workdir', 'unused'),
    "'data.classes': 'abc' is not a list",
    "('cat', 'other')",
  )
  assert '<ast.' not in line


@pytest.mark.parametrize('layout', ['missing', 'empty', 'one class', 'an empty class'])
def test_unusable_image_folders_are_refused_before_the_workdir_exists(tmp_path, layout):
  root = tmp_path / 'images'
  if layout != 'missing':
    root.mkdir()
  for name in {'one class': ['cat'], 'an empty class': ['cat', 'other']}.get(layout, []):
    (root / name).mkdir()
  if layout in ('one class', 'an empty class'):
    Image.fromarray(np.zeros((8, 8, 3), np.uint8)).save(root / 'cat' / 'a.png')
  workdir = tmp_path / 'run'
  result = run_main(
    cli.main, 'train', '--config', 'configs/cats.py:smoke', *TINY, '--config.data.source=folder',
    f'--config.data.folder={root}', '--workdir', str(workdir),
  )  # fmt: skip
  _one_line(result, str(root), 'not found' if layout == 'missing' else 'each holding images')
  assert not workdir.exists()


def test_a_missing_runs_path_is_not_looked_up_on_the_hub(tmp_path, monkeypatch):
  monkeypatch.chdir(tmp_path)  # No runs/ here: still a path (tinycats's own workdir folder), never a Hub id.
  monkeypatch.setenv('HF_ENDPOINT', 'http://127.0.0.1:9')  # A Hub lookup would fail differently, at once.
  result = run_main(cli.main, 'predict', '--workdir', 'runs/cats-1', 'photo.jpg')
  _one_line(result, 'runs/cats-1: no such workdir or export folder')
  assert not os.path.exists('runs')


def _raises(error):
  def fn():
    raise error

  return fn


def test_a_full_or_read_only_file_system_is_one_line_wherever_it_surfaces(capsys):
  # What Orbax's writer (TensorStore) raised when a checkpoint filled a 600 KB tmpfs, wrapped as Orbax's thread does.
  tensorstore = ValueError(
    'RESOURCE_EXHAUSTED: Error writing "layer3.1.conv2.kernel/0.0.0.0" in OCDBT database at local file '
    '"/w/checkpoints/4.orbax-checkpoint-tmp/model.orbax-checkpoint-tmp/ocdbt.process_0/": Failed writing: '
    '"/w/x.__lock": Failed to write 26385 bytes to file 8: No space left on device [os_error_code=\'28\']'
  )
  wrapped = RuntimeError('async save failed')
  wrapped.__cause__ = tensorstore
  assert errors.run_command('tinycats train', _raises(wrapped)) == USER_ERROR
  line = capsys.readouterr().err
  assert line.count('\n') == 1 and 'no space left on the device writing /w/checkpoints/4.orbax' in line
  assert 'resumes from its last complete checkpoint' in line
  full = OSError(errno.ENOSPC, 'No space left on device', '/w/metrics.jsonl')
  assert errors.run_command('tinycats train', _raises(full)) == USER_ERROR
  assert 'writing /w/metrics.jsonl (No space left on device)' in capsys.readouterr().err
  denied = PermissionError(errno.EACCES, 'Permission denied', '/w/config.json')
  assert errors.run_command('tinycats train', _raises(denied)) == USER_ERROR
  assert 'cannot write /w/config.json (Permission denied): make it writable' in capsys.readouterr().err
  with pytest.raises(ConnectionResetError):  # Not the file system: a bug's traceback stays.
    errors.run_command('tinycats train', _raises(ConnectionResetError(errno.ECONNRESET, 'reset')))


def _read_only(path) -> bool:
  """Makes the folder `path` unwritable for this process, truly: the immutable flag for root, else its mode."""
  if os.geteuid() != 0:
    os.chmod(path, 0o555)
    return True
  return subprocess.run(['chattr', '+i', str(path)], capture_output=True).returncode == 0


def test_a_read_only_workdir_is_one_line(tmp_path, image_folder):
  workdir = tmp_path / 'run'
  workdir.mkdir()
  if not _read_only(workdir):
    pytest.skip('cannot make a folder read-only here (root without chattr)')
  try:
    result = run_main(
      cli.main, 'train', '--config', 'configs/cats.py:smoke', *TINY, '--config.data.source=folder',
      f'--config.data.folder={image_folder}', '--workdir', str(workdir),
    )  # fmt: skip
  finally:
    if os.geteuid() == 0:
      subprocess.run(['chattr', '-i', str(workdir)], check=True)
    else:
      os.chmod(workdir, 0o755)
  _one_line(result, f'cannot write {workdir}', 'choose another --workdir')
  assert os.listdir(workdir) == []


def test_prepare_without_a_network_names_the_archives_and_the_offline_way(tmp_path, monkeypatch):
  urls = ['http://127.0.0.1:9/annotations.tar.gz', 'http://127.0.0.1:9/images.tar.gz']  # Nothing listens there.
  monkeypatch.setattr(pets, 'archive_urls', lambda: urls)
  result = run_main(cli.main, 'prepare', '--data-dir', str(tmp_path / 'tfds'))
  _one_line(result, 'could not download the archives', *urls, 'tinycats prepare --archives DIR --data-dir')
  assert not (tmp_path / 'tfds').exists()


def test_a_modal_launch_without_a_network_is_one_line_at_once(monkeypatch):
  monkeypatch.setenv('MODAL_TOKEN_ID', 'ak-not-a-real-token')
  monkeypatch.setenv('MODAL_TOKEN_SECRET', 'as-not-a-real-secret')
  monkeypatch.setenv(
    'MODAL_SERVER_URL', 'http://127.0.0.1:9'
  )  # Nothing listens: as offline, without a minute's retries.
  result = run_main(modal_train.main, '--config', 'configs/cats.py')
  _one_line(result, 'cannot reach Modal at http://127.0.0.1:9', '--local')
  assert 'Building image' not in result.stdout + result.stderr
