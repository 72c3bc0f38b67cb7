"""The remote code path on 4 devices: two JAX processes of 2 devices each (jax.distributed on 127.0.0.1) train
like one process with 4 devices and the same global batch."""

import json
import os
import socket
import subprocess
import sys

import numpy as np
import pytest
from conftest import REPO
from test_resume import _final_model_state

_RUN = """
import json, sys
sys.path.insert(0, 'tests')
from conftest import tiny_config
from launch import body
process_id, port, workdir, folder = int(sys.argv[1]), sys.argv[2], sys.argv[3], sys.argv[4]
config = tiny_config('--config.data.source=folder', f'--config.data.folder={folder}', '--config.train.epochs=1',
                     '--config.train.eval_every=5', '--config.model.dtype=float32')
distributed = dict(coordinator_address=f'127.0.0.1:{port}', num_processes=2, process_id=process_id) if port else None
print(json.dumps(body.train(config.to_dict(), workdir, distributed=distributed)))
"""


def _free_port() -> int:
  with socket.socket() as s:
    s.bind(('127.0.0.1', 0))
    return s.getsockname()[1]


def _start(args, env, tmp_path, process_id):
  cache = dict(env, TINYCATS_CACHE=str(tmp_path / f'cache{process_id}'))  # Each node has its own disk.
  return subprocess.Popen(
    [sys.executable, '-c', _RUN, str(process_id), *args],
    cwd=REPO,
    env=cache,
    stdout=subprocess.PIPE,
    stderr=subprocess.PIPE,
    text=True,
  )


@pytest.mark.slow  # Three processes compiling at once: about 75 s on 2 cores. `pytest -m slow` runs it.
def test_two_processes_train_as_one_with_the_same_global_batch(image_folder, tmp_path):
  env = dict(os.environ, JAX_PLATFORMS='cpu', XLA_FLAGS='--xla_force_host_platform_device_count=2')
  port, joint, single = str(_free_port()), str(tmp_path / 'joint'), str(tmp_path / 'single')
  processes = [_start([port, joint, image_folder], env, tmp_path, i) for i in range(2)]
  one = _start(['', single, image_folder], dict(env, XLA_FLAGS='--xla_force_host_platform_device_count=4'), tmp_path, 2)
  outputs = [p.communicate(timeout=400) for p in processes + [one]]
  for p, (_, err) in zip(processes + [one], outputs):
    assert p.returncode == 0, err[-3000:]
  summaries = [json.loads(out.strip().splitlines()[-1]) for out, _ in outputs]
  assert all(s['devices'] == 4 and s['steps'] == 10 for s in summaries)  # The global batch over 4 devices.
  assert '2 process(es), 4 device(s)' in outputs[0][1] and '1 process(es), 4 device(s)' in outputs[2][1]
  assert summaries[0]['test_accuracy'] == summaries[1]['test_accuracy'] == summaries[2]['test_accuracy']

  step_joint, joint_params = _final_model_state(joint, image_folder)
  step_single, single_params = _final_model_state(single, image_folder)
  assert step_joint == step_single == 10
  for key in single_params:
    np.testing.assert_allclose(joint_params[key], single_params[key], atol=1e-5, err_msg=key)
  # Only process 0 wrote the run's files: one row per log and evaluation, not two.
  rows = [json.loads(line) for line in open(os.path.join(joint, 'metrics.jsonl'))]
  assert [r['step'] for r in rows] == [r['step'] for r in map(json.loads, open(os.path.join(single, 'metrics.jsonl')))]
