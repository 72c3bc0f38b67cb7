"""The persistent compilation cache the loop turns on: where it goes, that training fills it, that a damaged or
unwritable cache never stops a run."""

import os
import subprocess
import sys

import jax
import pytest
from conftest import REPO, TINY

from tinycats.train import compile_cache


def test_settings_name_folders():
  assert compile_cache.folder('') == ''
  assert compile_cache.folder('~/x') == os.path.expanduser('~/x')
  assert compile_cache.folder('auto') == os.path.join(os.environ['TINYCATS_CACHE'], 'xla')  # conftest's private cache.


@pytest.fixture
def no_jax_cache():
  """JAX without a cache folder for the test (this process has the suite's, set in conftest)."""
  before = jax.config.jax_compilation_cache_dir
  jax.config.update('jax_compilation_cache_dir', None)
  yield
  jax.config.update('jax_compilation_cache_dir', before)


def test_an_unwritable_folder_warns_once_and_leaves_the_cache_off(no_jax_cache, tmp_path):
  (tmp_path / 'file').write_text('not a folder')
  with pytest.warns(UserWarning, match=r"cannot be written .*train.compilation_cache to another folder, or to ''"):
    assert compile_cache.enable(str(tmp_path / 'file' / 'xla')) == ''
  assert not jax.config.jax_compilation_cache_dir
  assert compile_cache.enable('') == '' and not jax.config.jax_compilation_cache_dir


def test_a_cache_jax_was_given_is_kept(tmp_path):
  assert compile_cache.enable(str(tmp_path)) == jax.config.jax_compilation_cache_dir != str(tmp_path)


def _train(workdir, image_folder, cache_root):
  env = {k: v for k, v in os.environ.items() if not k.startswith('JAX_COMPILATION_CACHE')}  # Not the suite's.
  env['TINYCATS_CACHE'] = str(cache_root)
  args = [*TINY, '--config.data.source=folder', f'--config.data.folder={image_folder}', '--config.train.epochs=1']
  command = [sys.executable, '-m', 'tinycats', 'train', '--config', 'configs/cats.py:smoke', '--workdir', workdir]
  return subprocess.run([*command, *args], cwd=REPO, env=env, capture_output=True, text=True, timeout=300)


@pytest.mark.slow  # Two child runs that compile from nothing: minutes on 2 cores.
def test_training_fills_the_cache_and_a_damaged_cache_still_trains(image_folder, tmp_path):
  first = _train(str(tmp_path / 'a'), image_folder, tmp_path / 'cache')
  assert first.returncode == 0, first.stderr[-3000:]
  entries = [os.path.join(root, f) for root, _, files in os.walk(tmp_path / 'cache' / 'xla') for f in files]
  assert entries, 'the run compiled its steps but left nothing in the cache'
  for path in entries:  # Every entry damaged: JAX compiles again (and warns); the run is unaffected.
    with open(path, 'wb') as f:
      f.write(b'not an executable')
  second = _train(str(tmp_path / 'b'), image_folder, tmp_path / 'cache')
  assert second.returncode == 0 and 'Traceback' not in second.stderr, second.stderr[-3000:]
