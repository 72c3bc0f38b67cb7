"""Faults injected into training runs: a second run on a busy workdir, a lock left by a process killed with -9,
checkpoint steps damaged on disk (a truncated array file, a deleted `_METADATA` or `meta/metadata`)."""

import errno
import json
import os
import shutil
import signal
import subprocess
import sys
import time

import numpy as np
import pytest
from conftest import LEARNING, REPO, launch_local, run_main, tiny_config

import launch.modal_train
from tinycats import cli, inference
from tinycats.classifier import Classifier
from tinycats.train import checkpoint, lock, loop
from tinycats.train.checkpoint import CheckpointDamaged


def _train_command(image_folder, workdir):
  """The session's tiny classifier run (`folder_run`): the same config, so the same compiled steps from the XLA
  cache."""
  return launch_local(image_folder, workdir, *LEARNING)


def _holder(workdir):
  try:
    with open(os.path.join(workdir, lock.LOCK)) as f:
      return json.loads(f.read() or 'null')
  except (OSError, ValueError):
    return None


def _steps(workdir):
  return sorted(int(d) for d in os.listdir(os.path.join(workdir, 'checkpoints')) if d.isdigit())


def _damage(workdir, step, how):
  """Damages checkpoint `step` as a disk or a careless hand would."""
  folder = os.path.join(workdir, 'checkpoints', str(step))
  if how == 'truncated':  # The model's largest array file, cut in half.
    data = os.path.join(folder, 'model', 'ocdbt.process_0', 'd')
    path = max((os.path.join(data, f) for f in os.listdir(data)), key=os.path.getsize)
    with open(path, 'r+b') as f:
      f.truncate(os.path.getsize(path) // 2)
  else:
    os.remove(os.path.join(folder, how))


@pytest.fixture
def trained(folder_run, tmp_path):
  """A copy of the session's tiny classifier run (its last two steps and its best), free to damage."""
  workdir = str(tmp_path / 'run')
  shutil.copytree(folder_run[0], workdir, ignore=shutil.ignore_patterns(lock.LOCK))
  return workdir, folder_run[1]['best_step']


def test_a_second_run_on_a_busy_workdir_is_refused_and_the_first_is_unaffected(trained, learning_folder):
  workdir, _ = trained
  last = _steps(workdir)[-1]
  shutil.rmtree(os.path.join(workdir, 'checkpoints', str(last)))  # The first run resumes to train the last steps.
  first = subprocess.Popen(
    _train_command(learning_folder, workdir),
    cwd=REPO,
    stdout=subprocess.PIPE,
    stderr=subprocess.PIPE,
    text=True,
  )
  deadline = time.time() + 120
  while first.poll() is None and time.time() < deadline and not _holder(workdir):
    time.sleep(0.05)
  holder = _holder(workdir)
  assert holder and holder['pid'] == first.pid, 'the first run never took the lock'

  second = run_main(launch.modal_train.main, *_train_command(learning_folder, workdir)[3:])
  assert second.returncode == 2
  line = second.stderr.strip().splitlines()[-1]
  assert ' error: ' in line
  assert f'pid {first.pid} on host {holder["host"]}, started {holder["started"]}' in line
  assert 'another --workdir' in line

  _, err = first.communicate(timeout=300)
  assert first.returncode == 0, err[-3000:]
  rows = [json.loads(r) for r in open(os.path.join(workdir, 'metrics.jsonl'))]
  train_steps = [r['step'] for r in rows if 'train_loss' in r]
  assert train_steps == sorted(set(train_steps)) and train_steps[-1] == last
  assert _holder(workdir) is None  # Released with the file emptied: the next run finds no dead holder.


def test_a_lock_left_by_a_killed_process_is_taken_over(tmp_path, capsys):
  # A process that holds the lock as a run does (its name in the file), without the seconds a run takes to start.
  holds = (
    'import fcntl, json, os, socket, sys, time\n'
    "f = open(os.path.join(sys.argv[1], '.lock'), 'w')\n"
    'fcntl.flock(f, fcntl.LOCK_EX)\n'
    "json.dump(dict(host=socket.gethostname(), pid=os.getpid(), started='2026-12-02 10:00:00 UTC'), f)\n"
    'f.flush()\n'
    'print(1, flush=True)\n'
    'time.sleep(600)'
  )
  holder = subprocess.Popen([sys.executable, '-c', holds, str(tmp_path)], stdout=subprocess.PIPE)
  assert holder.stdout.readline().strip() == b'1'
  with pytest.raises(lock.WorkdirBusy, match=f'pid {holder.pid} on host .*, started 2026-12-02 10:00:00 UTC'):
    with lock.hold(str(tmp_path)):
      pass
  holder.send_signal(signal.SIGKILL)
  holder.wait()

  with lock.hold(str(tmp_path)):
    assert _holder(str(tmp_path))['pid'] == os.getpid()
  assert f'taking over the lock of a run that ended without releasing it (pid {holder.pid} on host' in (
    capsys.readouterr().err
  )
  assert _holder(str(tmp_path)) is None


def test_a_damaged_latest_step_is_set_aside_and_the_run_resumes_from_the_one_before(trained, learning_folder):
  workdir, _ = trained
  steps = _steps(workdir)
  _damage(workdir, steps[-1], 'truncated')
  config = tiny_config('--config.data.source=folder', f'--config.data.folder={learning_folder}', *LEARNING)
  with pytest.warns(UserWarning, match=rf'step {steps[-1]}: .*Using step {steps[-2]}, the newest intact one') as w:
    summary = loop.train_and_evaluate(config, workdir)
  assert len([x for x in w if 'damaged checkpoint' in str(x.message)]) == 1
  assert summary['steps'] == steps[-1]
  assert _steps(workdir)[-1] == steps[-1]  # Written again by the resumed run.
  assert os.listdir(os.path.join(workdir, 'damaged_checkpoints')) == [str(steps[-1])]  # Kept, not deleted.


@pytest.mark.parametrize('how', ['truncated', 'model/_METADATA', 'meta/metadata'])
def test_a_damaged_best_step_falls_back_to_the_newest_intact_one(trained, how):
  workdir, best = trained
  _damage(workdir, best, how)
  newest_intact = max(s for s in _steps(workdir) if s != best)
  with pytest.warns(UserWarning, match=rf'step {best}: .*Using step {newest_intact}') as w:
    classifier = Classifier.load(workdir)
  assert classifier.step == newest_intact
  assert 'does not fit' not in str(w[0].message)  # Damage, not a config mismatch.
  assert _steps(workdir).count(best) == 1  # Inference reads; it moves nothing.


def test_no_intact_step_is_one_line_with_the_way_out(trained, learning_folder):
  workdir, _ = trained
  steps = _steps(workdir)
  for step in steps:
    _damage(workdir, step, 'model/_METADATA')
  with pytest.raises(CheckpointDamaged) as e:
    inference.load(workdir)
  assert 'no intact checkpoint in' in str(e.value) and 'new workdir' in str(e.value)
  config = tiny_config('--config.data.source=folder', f'--config.data.folder={learning_folder}', *LEARNING)
  with pytest.raises(CheckpointDamaged, match='no intact checkpoint in'):
    loop.train_and_evaluate(config, workdir)  # A resume says the same, and moves nothing.
  assert _steps(workdir) == steps and not os.path.exists(os.path.join(workdir, 'damaged_checkpoints'))
  with lock.hold(workdir):  # Released on the error.
    pass
  result = run_main(cli.main, 'evaluate', '--workdir', workdir)
  assert result.returncode == 2
  (line,) = result.stderr.strip().splitlines()
  assert 'model/_METADATA is missing' in line and 'Delete the damaged step folders' in line


def test_a_filesystem_without_flock_warns_once_and_goes_on(tmp_path, monkeypatch, capsys):
  def no_flock(fd, op):
    raise OSError(errno.ENOLCK, 'No locks available')

  monkeypatch.setattr(lock.fcntl, 'flock', no_flock)
  with lock.hold(str(tmp_path)):
    assert _holder(str(tmp_path))['pid'] == os.getpid()
  (line,) = capsys.readouterr().err.strip().splitlines()
  assert 'does not support flock (No locks available); the workdir is not locked' in line


@pytest.fixture
def small_disk(tmp_path):
  """A 600 KB tmpfs (root only): too small for the tiny run's first checkpoint. Yields (folder, grow)."""
  folder = tmp_path / 'disk'
  folder.mkdir()
  if os.geteuid() != 0 or subprocess.run(['mount', '-t', 'tmpfs', '-o', 'size=600k', 'tmpfs', str(folder)]).returncode:
    pytest.skip('needs root to mount a small tmpfs')
  grow = lambda: subprocess.run(['mount', '-o', 'remount,size=64m', str(folder)], check=True)
  yield str(folder), grow
  subprocess.run(['umount', '-l', str(folder)])


def test_a_full_disk_during_a_checkpoint_is_one_line_leaves_no_partial_save_and_the_rerun_resumes(
  small_disk, learning_folder
):
  folder, grow = small_disk
  workdir = os.path.join(folder, 'run')
  command = _train_command(learning_folder, workdir)
  full = subprocess.run(command, cwd=REPO, capture_output=True, text=True, timeout=300)
  assert full.returncode == 2, full.stderr[-3000:]
  last = full.stderr.strip().splitlines()[-1]
  assert 'no space left on the device' in last and 'resumes from its last complete checkpoint' in last
  assert 'Traceback' not in full.stderr
  checkpoints = os.path.join(workdir, 'checkpoints')
  assert not [n for n in os.listdir(checkpoints) if 'orbax-checkpoint-tmp' in n]  # The half-written step is gone.
  grow()  # Space again: the same command trains on to the end.
  rerun = subprocess.run(command, cwd=REPO, capture_output=True, text=True, timeout=300)
  assert rerun.returncode == 0, rerun.stderr[-3000:]
  assert json.load(open(os.path.join(workdir, 'summary.json')))['steps'] == 200


def test_a_save_that_fails_at_once_deletes_its_partial_step(tmp_path, monkeypatch):
  """A failure inside `save` itself (Orbax's synchronous part), not only in `wait`, leaves no half-written step."""
  checkpoints = checkpoint.Checkpoints(str(tmp_path / 'checkpoints'))
  partial = os.path.join(checkpoints.directory, f'3{checkpoint.PARTIAL_SAVE}-1733390000')

  def full_disk(*args, **kwargs):
    os.makedirs(partial)  # Orbax had begun writing the step when the disk filled.
    raise OSError(28, 'No space left on device')

  monkeypatch.setattr(checkpoints._manager, 'save', full_disk)
  with pytest.raises(OSError, match='No space left'):
    checkpoints.save(3, {'model': {'w': np.zeros(2)}}, meta={'step': 3})
  assert not os.path.exists(partial)
