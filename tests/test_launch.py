"""The launcher's command line: config errors, no Modal token, the CLI's commands.

Most run the commands' `main` in this process (`conftest.run_main`); the child processes check the real entry
points (`python -m tinycats`, `python -m launch.modal_train`) and what needs a fresh process (no Modal token,
TensorFlow)."""

import json
import os
import subprocess
import sys

import pytest
from conftest import REPO, run_main, run_tinycats

from launch import modal_train
from tinycats import cli


def _launch(*args):
  return run_main(modal_train.main, *args)


# The two commands that train here: one code path, one override parser, the same exit codes.
TRAIN_HERE = {'launch': lambda *a: _launch('--local', *a), 'tinycats': lambda *a: run_main(cli.main, 'train', *a)}


def _no_modal_token_env(tmp_path):
  env = {k: v for k, v in os.environ.items() if not k.startswith('MODAL_')}
  env['HOME'] = str(tmp_path)  # No ~/.modal.toml.
  return env


def test_without_a_modal_token_it_says_how_to_authenticate_before_any_build(tmp_path):
  result = subprocess.run(
    [sys.executable, '-m', 'launch.modal_train', '--config', 'configs/cats.py'],
    cwd=REPO,
    capture_output=True,
    text=True,
    timeout=120,
    env=_no_modal_token_env(tmp_path),
  )
  assert result.returncode == 2
  assert 'modal setup' in result.stderr and 'modal token new' in result.stderr and '--local' in result.stderr
  assert 'Building image' not in result.stdout + result.stderr
  # --prepare is refused with --local: its way out is `tinycats prepare`; its dry run shows the preparation.
  command = [sys.executable, '-m', 'launch.modal_train', '--config', 'configs/cats.py', '--prepare']
  env = _no_modal_token_env(tmp_path)
  prepare = subprocess.run(command, cwd=REPO, capture_output=True, text=True, timeout=120, env=env)
  assert prepare.returncode == 2 and 'tinycats prepare --data-dir DIR' in prepare.stderr
  assert '--local' not in prepare.stderr
  dry = subprocess.run([*command, '--dry-run'], cwd=REPO, capture_output=True, text=True, timeout=120, env=env)
  plan = json.loads(dry.stdout)
  assert dry.returncode == 0 and plan['action'] == 'prepare' and 'config' not in plan


@pytest.mark.parametrize(
  'args, message',
  [
    (['--config.train.batchsize=3'], "did you mean 'train.batch_size'"),
    (['--config.data.labels', 'dogs'], "'data.labels' is 'dogs'"),
    (['--config.train.epochs=two'], "bad value for config field 'train.epochs'"),
  ],
)
@pytest.mark.parametrize('command', TRAIN_HERE)
def test_config_errors_name_the_field(command, args, message, tmp_path):
  result = TRAIN_HERE[command]('--config', 'configs/cats.py', '--workdir', str(tmp_path / 'run'), *args)
  assert result.returncode == 2 and message in result.stderr, result.stderr
  assert 'Traceback' not in result.stderr and not (tmp_path / 'run').exists()


@pytest.mark.parametrize('command', TRAIN_HERE)
def test_unknown_flags_are_refused(command, tmp_path):
  result = TRAIN_HERE[command]('--config', 'configs/cats.py', '--workdir', str(tmp_path), '--epochs=3')
  assert result.returncode == 2 and 'unrecognized arguments: --epochs=3' in result.stderr
  assert 'config fields are set as --config.train.batch_size=64' in result.stderr


def test_config_overrides_belong_to_train_only():
  result = run_main(cli.main, 'evaluate', '--workdir', 'w', '--config.train.epochs=3')
  assert result.returncode == 2 and 'unrecognized arguments: --config.train.epochs=3' in result.stderr


def test_missing_tfds_data_says_how_to_prepare(tmp_path):
  result = run_tinycats(  # A child process: looking for the prepared files imports tensorflow_datasets.
    'train',
    '--config',
    'configs/cats.py:smoke',
    '--workdir',
    str(tmp_path / 'run'),
    f'--config.data.data_dir={tmp_path}',
    '--config.model.pretrained=',
  )
  assert result.returncode == 2 and 'Traceback' not in result.stderr
  assert f'tinycats prepare --archives DIR --data-dir {tmp_path}' in result.stderr, result.stderr


def test_cli_lists_its_commands():
  result = run_tinycats('--help')
  assert result.returncode == 0
  for command in ('prepare', 'evaluate', 'predict'):
    assert command in result.stdout


def test_evaluate_on_a_folder_that_is_not_a_workdir(tmp_path):
  result = run_main(cli.main, 'evaluate', '--workdir', str(tmp_path))
  assert result.returncode == 2 and 'is this a tinycats workdir' in result.stderr


def test_missing_pretrained_weights_stop_before_any_work(tmp_path):
  result = _launch(
    '--config',
    'configs/cats.py:smoke',
    '--local',
    '--workdir',
    str(tmp_path / 'run'),
    f'--config.data.data_dir={tmp_path}',
    f'--config.model.pretrained={tmp_path}/resnet18.safetensors',
  )
  assert result.returncode == 2
  assert 'no such file' in result.stderr and "--config.model.pretrained=''" in result.stderr
  assert 'tinycats prepare' not in result.stderr  # It stopped before looking at the data.
  assert not (tmp_path / 'run' / 'config.json').exists()


def test_unusable_image_folder_is_one_line_not_a_traceback(tmp_path):
  (tmp_path / 'images' / 'cat').mkdir(parents=True)
  result = _launch(
    '--config',
    'configs/cats.py:smoke',
    '--local',
    '--workdir',
    str(tmp_path / 'run'),
    '--config.data.source=folder',
    f'--config.data.folder={tmp_path / "images"}',
    '--config.model.pretrained=',
  )
  assert result.returncode == 2 and 'needs at least two class sub-folders' in result.stderr
  assert 'Traceback' not in result.stderr
