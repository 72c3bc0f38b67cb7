"""The Modal launcher, offline: the plan, the app definition, and the train body run in-process."""

import json
import os

import pytest
from conftest import REPO, TINY, run_main, tiny_config

from launch import body, claim, modal_app, modal_train, plan as plan_lib
from tinycats.train.checkpoint import Checkpoints


def _dry_run(*args):
  return run_main(modal_train.main, '--dry-run', *args)


@pytest.mark.parametrize('spec', ['configs/cats.py', 'configs/dit.py'])
def test_dry_run_prints_the_whole_plan(spec):
  result = _dry_run('--config', spec, '--name', 'run1', '--config.modal.gpu=H100:8')
  assert result.returncode == 0, result.stderr
  plan = json.loads(result.stdout)
  assert plan['app'] == 'tinycats' and plan['run_name'] == 'run1' and plan['workdir'] == '/outputs/run1'
  assert plan['gpu'] == 'H100:8' and plan['devices'] == 8 and plan['timeout'] == 4 * 3600
  assert plan['retries']['max_retries'] == 3 and plan['retries']['backoff_coefficient'] > 1
  assert any(p.startswith('jax[cuda12]') for p in plan['image']['packages'])
  assert 'tinycats' in plan['image']['local_sources'] and plan['image']['local_dirs'] == {'configs': '/root/configs'}
  assert any(p.startswith('tensorflow-cpu') for p in plan['prepare_image']['packages'])
  assert plan['volumes']['data'] == {'name': 'tinycats-data', 'mount': '/data', 'tfds_data_dir': '/data/tfds'}
  assert plan['volumes']['outputs'] == {'name': 'tinycats-outputs', 'mount': '/outputs'}
  assert plan['config']['data']['data_dir'] == '/data/tfds' and plan['config']['modal']['gpu'] == 'H100:8'
  assert plan['config']['task'] == ('classifier' if 'cats' in spec else 'generator')
  assert plan['fetch'] == 'modal volume get tinycats-outputs run1 runs/run1'
  assert plan['claims'] == {'dict': 'tinycats-runs', 'stale_after_s': 4 * 3600 + 60}


@pytest.mark.parametrize(
  'override, message',
  [
    ('--config.modal.gpu=H100:16', "config field modal.gpu is 'H100:16'"),
    ('--config.modal.gpu=V100', "config field modal.gpu is 'V100'"),
    ('--config.modal.timeout=-1', 'config field modal.timeout is -1'),
    ('--config.modal.retries=-2', 'modal.retries'),
  ],
)
def test_bad_modal_fields_are_named(override, message):
  result = _dry_run('--config', 'configs/cats.py', override)
  assert result.returncode == 2 and message in result.stderr, result.stderr


def test_the_app_is_defined_without_a_token_or_network():
  config = tiny_config('--config.modal.gpu=A100:2', '--config.modal.nodes=2')
  run = modal_app.build(plan_lib.launch_plan(config, 'r'))
  assert run.app.name == 'tinycats'
  assert (repr(run.train), repr(run.prepare)) == ('Function(train)', 'Function(prepare)')


class FakeVolume:
  """Records each commit with the checkpoints on disk at that moment."""

  def __init__(self, workdir):
    self.workdir, self.commits = workdir, []

  def commit(self):
    root = os.path.join(self.workdir, 'checkpoints')
    self.commits.append(sorted(int(d) for d in os.listdir(root) if d.isdigit()) if os.path.isdir(root) else [])


def test_train_body_commits_each_checkpoint_and_a_second_call_resumes(image_folder, tmp_path):
  workdir = str(tmp_path / 'outputs' / 'run1')  # Where the outputs volume is mounted.
  volume = FakeVolume(workdir)
  config = tiny_config(
    '--config.data.source=folder',
    f'--config.data.folder={image_folder}',
    '--config.train.epochs=1',
    '--config.train.eval_every=5',
    '--config.train.keep_checkpoints=5',
  )
  summary = body.train(config.to_dict(), workdir, commit=volume.commit)
  assert summary['steps'] == 10 and summary['workdir'] == workdir
  # One commit per checkpoint (steps 5, 10), each after that checkpoint was written, and one at the end.
  assert volume.commits == [[5], [5, 10], [5, 10]]
  assert os.path.isfile(os.path.join(workdir, 'summary.json'))

  # A retry (or the same command again) continues the run: here with one more epoch.
  config.train.epochs = 2
  resumed = FakeVolume(workdir)
  summary = body.train(config.to_dict(), workdir, commit=resumed.commit)
  assert summary['steps'] == 20
  assert [c[-1] for c in resumed.commits] == [15, 20, 20]  # Nothing retrained.
  assert Checkpoints(os.path.join(workdir, 'checkpoints'), read_only=True).latest_step() == 20


def test_tinycats_train_and_launch_local_are_one_run(image_folder, tmp_path, capsys):
  from launch import modal_train
  from tinycats import cli

  workdir = str(tmp_path / 'run')
  args = [
    '--config',
    os.path.join(REPO, 'configs/cats.py:smoke'),
    '--workdir',
    workdir,
    *TINY,
    '--config.data.source',
    'folder',
    f'--config.data.folder={image_folder}',
    '--config.train.eval_every=5',
  ]
  with pytest.raises(SystemExit) as exit_:
    cli.main(['train', *args, '--config.train.epochs=1'])
  assert exit_.value.code == 0 and json.loads(capsys.readouterr().out)['steps'] == 10
  # The launcher's --local resumes what `tinycats train` wrote: one more epoch, nothing retrained.
  assert modal_train.main([*args, '--local', '--config.train.epochs=2']) == 0
  summary = json.loads(capsys.readouterr().out)
  assert summary['steps'] == 20 and summary['workdir'] == workdir
  with open(os.path.join(workdir, 'metrics.jsonl')) as f:
    assert [row['step'] for row in map(json.loads, f) if 'val_loss' in row or 'val_accuracy' in row] == [5, 10, 15, 20]


def test_local_runs_go_under_the_runs_dir():
  from launch import modal_train

  args, _ = modal_train.parse_args(['--config', 'configs/cats.py', '--local', '--runs-dir', '/tmp/r'])
  assert modal_train.local_workdir(args, 'cats-1') == os.path.join('/tmp/r', 'cats-1')
  args, _ = modal_train.parse_args(['--config', 'configs/cats.py', '--local', '--workdir', '/tmp/w'])
  assert modal_train.local_workdir(args, 'cats-1') == '/tmp/w'
  args, _ = modal_train.parse_args(['--config', 'configs/cats.py', '--local'])
  assert modal_train.local_workdir(args, 'cats-1') == os.path.join('runs', 'cats-1')


class FakeDict:
  """modal.Dict's put (with skip_if_exists), get and pop, in memory."""

  def __init__(self):
    self.items, self.puts = {}, 0

  def put(self, key, value, *, skip_if_exists=False):
    if skip_if_exists and key in self.items:
      return False
    self.items[key], self.puts = value, self.puts + 1
    return True

  def get(self, key, default=None):
    return self.items.get(key, default)

  def pop(self, key, default=None):
    return self.items.pop(key, default)


def test_one_call_per_run_name_a_retry_and_a_dead_holder_take_over(capsys):
  store, clock = FakeDict(), [1000.0]
  now = lambda: clock[0]
  with claim.hold(store, 'run1', 'fc-1', stale_after=60, now=now) as heartbeat:
    with pytest.raises(claim.RunClaimed, match=r'run run1 is being trained by another Modal call \(fc-1 on .*--name'):
      with claim.hold(store, 'run1', 'fc-2', stale_after=60, now=now):
        pass
    assert store.get('run1')['call'] == 'fc-1'  # The refused call changed nothing.
    clock[0] += 50
    heartbeat()  # A checkpoint.
    clock[0] += 50  # 100 s since the start, 50 since the checkpoint: still alive.
    assert claim.refusal(store, 'run1', 'fc-2', 60, now)
    with claim.hold(store, 'run1', 'fc-1', stale_after=60, now=now):  # Modal retried the same call.
      assert 'call fc-1 retried' in capsys.readouterr().err
  assert store.get('run1') is None  # Released when the call ends.

  store.put('run1', dict(call='fc-3', host='h', started=0.0, heartbeat=0.0))  # Killed, never released.
  with claim.hold(store, 'run1', 'fc-4', stale_after=60, now=now):
    assert store.get('run1')['call'] == 'fc-4'
    assert 'taking over the claim of call fc-3' in capsys.readouterr().err
  assert claim.refusal(store, 'run1', None, 60, now) is None


def test_a_second_call_on_a_run_being_trained_is_refused_and_touches_nothing(image_folder, tmp_path):
  workdir = str(tmp_path / 'outputs' / 'run1')
  store, refused = FakeDict(), []
  config = tiny_config(
    '--config.data.source=folder',
    f'--config.data.folder={image_folder}',
    '--config.train.epochs=1',
    '--config.train.eval_every=5',
  )

  def commit():  # At the first checkpoint, another launch with the same --name arrives.
    if not refused:
      refused.append(body.train_claimed(store, 'fc-2', 3600, config.to_dict(), workdir))

  summary = body.train_claimed(store, 'fc-1', 3600, config.to_dict(), workdir, commit=commit)
  assert summary['steps'] == 10
  assert refused[0]['refused'].startswith('run run1 is being trained by another Modal call (fc-1')
  assert store.get('run1') is None and store.puts >= 3  # Claimed, refreshed at each checkpoint, released.
  rows = [json.loads(line) for line in open(os.path.join(workdir, 'metrics.jsonl'))]
  steps = [r['step'] for r in rows]
  assert steps == sorted(steps) and steps[-1] == 10  # One run's rows, not two interleaved.
