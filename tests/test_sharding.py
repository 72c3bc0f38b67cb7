"""The data-parallel step on 2 (forced) host devices computes what the 1-device step computes."""
import json
import os
import subprocess
import sys
import textwrap

from conftest import REPO

SCRIPT = textwrap.dedent('''
  import json, sys
  sys.path.insert(0, 'tests')
  import jax, numpy as np
  from flax import nnx
  from conftest import tiny_config
  from tinycats.train import state as state_lib, step as step_lib, loop
  from tinycats.train.tasks import TASKS
  assert jax.device_count() == 2, jax.devices()

  config = tiny_config('--config.data.source=folder', '--config.data.folder=unused', '--config.model.dtype=float32')
  task = TASKS['classify'](config, ['cat', 'other'])
  rng = np.random.default_rng(0)
  batches = [{'image': rng.integers(0, 255, (16, 36, 36, 3), dtype=np.uint8),
              'label': rng.integers(0, 2, 16).astype(np.int32)} for _ in range(3)]

  def run(devices):
    mesh = step_lib.make_mesh(devices)
    model, optimizer, _ = state_lib.create(task, config, 10, 30)
    graphdef, state = nnx.split((model, optimizer))
    state = jax.device_put(state, step_lib.replicated(mesh))
    train_step = step_lib.TrainStep(graphdef, task.loss, mesh)
    losses = []
    for i, batch in enumerate(batches):
      state, metrics = train_step(state, step_lib.shard_batch(batch, mesh), jax.random.key(7), i)
      losses.append(float(metrics['loss']))
    sharding = state_lib.to_checkpoint(state)['model']['conv1']['kernel'].sharding
    replicated = sharding.spec == jax.sharding.PartitionSpec() and len(sharding.device_set) == len(devices)
    leaves = {'.'.join(map(str, k)): np.asarray(v) for k, v in nnx.to_flat_state(state[0])}
    return losses, leaves, replicated

  losses_1, leaves_1, _ = run(jax.devices()[:1])
  losses_2, leaves_2, replicated = run(jax.devices())
  worst = max(float(np.max(np.abs(leaves_1[k] - leaves_2[k]))) for k in leaves_1)
  print(json.dumps({'losses_1': losses_1, 'losses_2': losses_2, 'worst_param_diff': worst, 'replicated': replicated}))
''')

LOOP_SCRIPT = textwrap.dedent('''
  import json, sys
  sys.path.insert(0, 'tests')
  from conftest import tiny_config
  from tinycats.train import loop
  config = tiny_config('--config.data.source=folder', '--config.data.folder=' + sys.argv[1], '--config.train.epochs=1')
  print(json.dumps(loop.train_and_evaluate(config, sys.argv[2])))
''')


def _run(script, *args):
  env = dict(os.environ, XLA_FLAGS='--xla_force_host_platform_device_count=2')
  result = subprocess.run([sys.executable, '-c', script, *args], cwd=REPO, env=env, capture_output=True, text=True,
                          timeout=300)
  assert result.returncode == 0, result.stderr[-4000:]
  return json.loads(result.stdout.strip().splitlines()[-1])


def test_two_devices_match_one():
  out = _run(SCRIPT)
  for a, b in zip(out['losses_1'], out['losses_2']):
    assert abs(a - b) < 1e-5, out
  assert out['worst_param_diff'] < 1e-5, out
  assert out['replicated']  # The state is replicated over both devices.


def test_the_loop_runs_sharded(image_folder, tmp_path):
  summary = _run(LOOP_SCRIPT, image_folder, str(tmp_path))
  assert summary['devices'] == 2 and summary['steps'] == 10
  assert os.path.isfile(tmp_path / 'eval.json')
