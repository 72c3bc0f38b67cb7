"""What a new user trips on: a workdir trained elsewhere, a misspelt field set in Python."""

import json
import os
import shutil
import subprocess
import sys

import pytest
from conftest import run_main

from tinycats import cli, config as config_lib
from tinycats.train import lock


def test_a_run_trained_elsewhere_is_evaluated_here_with_data_dir(folder_run, learning_folder, tmp_path):
  # A run whose config.json names a data folder of another machine (a Modal container's path).
  workdir = str(tmp_path / 'fetched')
  shutil.copytree(folder_run[0], workdir, ignore=shutil.ignore_patterns(lock.LOCK))
  stored = json.load(open(os.path.join(workdir, 'config.json')))
  stored['data']['folder'] = '/data/pictures'
  json.dump(stored, open(os.path.join(workdir, 'config.json'), 'w'))
  missing = run_main(cli.main, 'evaluate', '--workdir', workdir)
  assert missing.returncode == 2 and 'pass --data-dir DIR' in missing.stderr and 'Traceback' not in missing.stderr
  here = run_main(cli.main, 'evaluate', '--workdir', workdir, '--data-dir', learning_folder)
  assert here.returncode == 0, here.stderr
  assert json.loads(here.stdout)['split'] == 'test'
  assert json.load(open(os.path.join(workdir, 'config.json')))['data']['folder'] == '/data/pictures'  # Untouched.
  # `export onnx --int8` scores validation pictures too: the same way out.
  for extra, measured in (([], False), (['--data-dir', learning_folder], True)):
    out = str(tmp_path / f'onnx{len(extra)}')
    exported = run_main(cli.main, 'export', 'onnx', '--workdir', workdir, '--out-dir', out, '--int8', *extra)
    assert exported.returncode == 0, exported.stderr
    assert json.loads(exported.stdout)['int8']['validation']['measured'] is measured


def test_configs_and_the_launcher_work_from_any_folder(tmp_path, monkeypatch):
  monkeypatch.chdir(tmp_path)
  assert config_lib.load('configs/cats.py:smoke').task == 'classifier'
  with pytest.raises(config_lib.ConfigError, match='not found in .* nor in the tinycats checkout'):
    config_lib.load('configs/nope.py')
  dry = subprocess.run(
    [sys.executable, '-m', 'launch.modal_train', '--config', 'configs/cats.py:smoke', '--dry-run', '--name', 'x'],
    cwd=tmp_path,
    capture_output=True,
    text=True,
    timeout=120,
  )
  assert dry.returncode == 0, dry.stderr[-2000:]


def test_help_shows_defaults_and_a_commands_error_shows_its_own_usage():
  sample = run_main(cli.main, 'sample', '--help')
  assert sample.returncode == 0 and '(default: 8)' in sample.stdout and 'noise seed' in sample.stdout
  evaluate = run_main(cli.main, 'evaluate', '--help')
  assert '(default: test)' in ' '.join(evaluate.stdout.split())
  assert 'serve' in run_main(cli.main, '--help').stdout.split('\n\n')[1]  # The description names every command.
  missing = run_main(cli.main, 'sample', '--workdir', 'x')
  assert missing.returncode == 2 and missing.stderr.strip().splitlines()[-1].startswith('tinycats sample: error:')
  assert 'usage: tinycats sample' in missing.stderr


def test_help_imports_no_jax_and_an_old_flag_names_its_new_spelling():
  """`tinycats --help` builds every parser without JAX (about 0.2 s, not 3 s); renamed flags say their new name."""
  code = (
    'import sys; from tinycats import cli; cli.build_parser(); print([m for m in ("jax", "flax") if m in sys.modules])'  # noqa: E501
  )
  shown = subprocess.run([sys.executable, '-c', code], capture_output=True, text=True, timeout=120)
  assert shown.returncode == 0 and shown.stdout.strip() == '[]', shown.stderr[-2000:]
  for args, old, new in (
    (['sample', '--workdir', 'w', '--out', 'x.png', '--cfg', '2'], '--cfg', '--guidance'),
    (['evaluate', '--workdir', 'w', '--cfg=2'], '--cfg', '--guidance'),
    (['export', 'onnx', '--workdir', 'w', '--out-dir', 'o', '--model', 'generator'], '--model', '--task'),
  ):
    result = run_main(cli.main, *args)
    assert result.returncode == 2 and f'{old} is now {new}' in result.stderr, (args, result.stderr)


def test_an_install_without_the_benchmarks_still_runs_every_other_command(monkeypatch):
  """An editable install made before benchmarks/ was a package cannot import it: `bench` says how to reinstall,
  and the other commands (and --help) work as before."""
  monkeypatch.setitem(sys.modules, 'benchmarks', None)  # `import benchmarks` raises ImportError.
  assert run_main(cli.main, '--help').returncode == 0
  result = run_main(cli.main, 'bench', '--quality', 'classifier')
  assert result.returncode == 2 and "pip install -e '.[dev]'" in result.stderr, result.stderr


def test_every_command_answers_a_missing_workdir_the_same_way(tmp_path, monkeypatch):
  monkeypatch.chdir(tmp_path)
  monkeypatch.setenv('HF_ENDPOINT', 'http://127.0.0.1:9')  # Never the Hub for these.
  commands = [
    ['evaluate', '--workdir', 'runs/typo'],
    ['predict', '--workdir', 'runs/typo', 'photo.jpg'],
    ['sample', '--workdir', 'runs/typo', '--out', 'x.png'],
    ['export', 'onnx', '--workdir', 'runs/typo', '--out-dir', 'out'],
  ]
  for args in commands:
    result = run_main(cli.main, *args)
    assert result.returncode == 2, args
    (line,) = result.stderr.strip().splitlines()
    assert line.endswith(f'runs/typo: no such workdir or export folder in {tmp_path}; a Hugging Face Hub repo is '
                         'hf-hub:runs/typo'), (args, line)  # fmt: skip


def test_evaluating_another_split_keeps_the_test_result(folder_run, tmp_path):
  workdir = str(tmp_path / 'run')
  shutil.copytree(folder_run[0], workdir, ignore=shutil.ignore_patterns(lock.LOCK))
  test_result = open(os.path.join(workdir, 'eval.json')).read()
  assert run_main(cli.main, 'evaluate', '--workdir', workdir, '--split', 'val').returncode == 0
  assert open(os.path.join(workdir, 'eval.json')).read() == test_result  # What a Hub card reports.
  assert json.load(open(os.path.join(workdir, 'eval_val.json')))['split'] == 'val'
  assert os.path.isfile(os.path.join(workdir, 'confusion_val.png'))
