"""docs/walkthrough.md, run as written: its commands in order, in a fresh folder (not the checkout: configs/ is
found in the checkout tinycats is installed from), on a small folder of pictures.

Two changes only, both for time: `train` gets test-size overrides appended, and `serve` a free port (it is
started, asked for the page, and stopped).
"""

import os
import re
import shutil
import subprocess
import sys
import urllib.request

from conftest import REPO

# Appended to the walk-through's `train`: seconds instead of minutes, the same code paths.
TEST_SIZE = [
  '--config.data.image_size=32',
  '--config.data.cache_size=40',
  '--config.train.steps=20',
  '--config.train.eval_every=10',
  '--config.train.batch_size=16',
]


def _commands() -> list[list[str]]:
  text = open(os.path.join(REPO, 'docs', 'walkthrough.md')).read()
  (block,) = re.findall(r'```bash\n(.*?)```', text, flags=re.S)
  return [line.split() for line in block.strip().splitlines()]


def test_the_walkthrough_runs_as_written(image_folder, tmp_path):
  shutil.copytree(image_folder, tmp_path / 'pictures', ignore=shutil.ignore_patterns('.tinycats-cache'))
  commands = _commands()
  assert [c[:2] for c in commands] == [
    ['tinycats', 'train'],
    ['tinycats', 'evaluate'],
    ['tinycats', 'evaluate'],
    ['tinycats', 'predict'],
    ['tinycats', 'export'],
    ['tinycats', 'serve'],
  ]
  for command in commands[:-1]:
    args = command[1:] + (TEST_SIZE if command[1] == 'train' else [])
    if command[1:3] == ['export', 'site'] and os.environ.get('TINYCATS_ORT_DIR'):
      args += ['--ort-dir', os.environ['TINYCATS_ORT_DIR']]  # As tests/test_site.py: offline when given.
    result = subprocess.run(
      [sys.executable, '-m', 'tinycats', *args], cwd=tmp_path, capture_output=True, text=True, timeout=600
    )
    assert result.returncode == 0, (command, result.stderr[-3000:])
  run = tmp_path / 'runs' / 'first'
  for name in ('config.json', 'data.json', 'eval.json', 'eval_val.json', 'confusion.png', 'curves.png'):
    assert (run / name).is_file(), name
  assert (tmp_path / 'site' / 'index.html').is_file()

  serve = subprocess.Popen(
    [sys.executable, '-m', 'tinycats', *commands[-1][1:], '--port', '0'],
    cwd=tmp_path,
    stderr=subprocess.PIPE,
    text=True,
  )
  try:
    line = serve.stderr.readline()  # 'tinycats serve: site at http://127.0.0.1:PORT/ (Ctrl-C stops)'
    url = re.search(r'http://[^ ]+/', line).group(0)
    with urllib.request.urlopen(url, timeout=30) as page:
      assert page.status == 200 and b'<html' in page.read().lower()
  finally:
    serve.terminate()
    serve.wait(timeout=30)
