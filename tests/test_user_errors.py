"""Faults and odd inputs that a user can fix end in one line with the way out and exit 2, never a traceback."""

import os

import numpy as np
import pytest
from conftest import TINY, run_main
from PIL import Image

from tinycats import cli
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
    "'data.classes': 'abc' is not a tuple",
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
