"""The data-parallel step on 2 (forced) host devices computes what the 1-device step computes,
with batches gathered on the host or from the split kept on the devices."""

import json
import os
import subprocess
import sys
import textwrap

from conftest import REPO

SCRIPT = textwrap.dedent("""
  import json, sys
  sys.path.insert(0, 'tests')
  import jax, numpy as np
  from flax import nnx
  from conftest import tiny_config
  from tinycats.data import Split
  from tinycats import sharding as sharding_lib
  from tinycats.train import feed as feed_lib, state as state_lib, step as step_lib
  from tinycats.train.tasks import TASKS
  assert jax.device_count() == 2, jax.devices()

  config = tiny_config('--config.data.source=folder', '--config.data.folder=unused', '--config.model.dtype=float32')
  task = TASKS['classifier'](config, ['cat', 'other'])
  rng = np.random.default_rng(0)
  split = Split(rng.integers(0, 255, (48, 36, 36, 3), dtype=np.uint8), rng.integers(0, 2, 48).astype(np.int32),
                [], [], rng.integers(20, 37, (48, 2)).astype(np.int32))

  def run(devices, device_cache_gb=0.0):
    mesh = sharding_lib.make_mesh(devices)
    model, optimizer, _ = state_lib.create(task, config, 10, 30)
    graphdef, state = nnx.split((model, optimizer))
    state = jax.device_put(state, sharding_lib.replicated(mesh))
    train_step = step_lib.TrainStep(graphdef, task.loss, mesh)
    feed = feed_lib.Feed(split, mesh, batch_size=16, steps_per_epoch=3, seed=0, device_cache_gb=device_cache_gb)
    assert (feed.resident is not None) == bool(device_cache_gb)
    losses = []
    for i in range(4):  # Into a second epoch: a new order.
      batch, resident = feed(i)
      state, metrics = train_step(state, batch, jax.random.key(7), i, resident)
      losses.append(float(metrics['loss']))
    sharding = state_lib.to_checkpoint(state)['model']['conv1']['kernel'].sharding
    replicated = sharding.spec == jax.sharding.PartitionSpec() and len(sharding.device_set) == len(devices)
    leaves = {'.'.join(map(str, k)): np.asarray(v) for k, v in nnx.to_flat_state(state[0])}
    return losses, leaves, replicated

  losses_1, leaves_1, _ = run(jax.devices()[:1])
  losses_2, leaves_2, replicated = run(jax.devices())
  losses_r, leaves_r, _ = run(jax.devices(), device_cache_gb=1.0)
  worst = lambda a, b: max(float(np.max(np.abs(a[k] - b[k]))) for k in a)
  print(json.dumps({'losses_1': losses_1, 'losses_2': losses_2, 'losses_resident': losses_r,
                    'worst_param_diff': worst(leaves_1, leaves_2), 'resident_param_diff': worst(leaves_2, leaves_r),
                    'replicated': replicated}))
""")

LOOP_SCRIPT = textwrap.dedent("""
  import json, sys
  sys.path.insert(0, 'tests')
  from conftest import tiny_config
  from tinycats.train import loop
  config = tiny_config('--config.data.source=folder', '--config.data.folder=' + sys.argv[1], '--config.train.epochs=1')
  print(json.dumps(loop.train_and_evaluate(config, sys.argv[2])))
""")


def _run(script, *args):
  env = dict(os.environ, XLA_FLAGS='--xla_force_host_platform_device_count=2')
  result = subprocess.run(
    [sys.executable, '-c', script, *args], cwd=REPO, env=env, capture_output=True, text=True, timeout=300
  )
  assert result.returncode == 0, result.stderr[-4000:]
  return json.loads(result.stdout.strip().splitlines()[-1])


def test_two_devices_match_one():
  out = _run(SCRIPT)
  for a, b in zip(out['losses_1'], out['losses_2'], strict=True):
    assert abs(a - b) < 1e-5, out
  assert out['losses_resident'] == out['losses_2'], out  # The same batches, gathered on the devices.
  assert out['worst_param_diff'] < 1e-5 and out['resident_param_diff'] == 0.0, out
  assert out['replicated']  # The state is replicated over both devices.


def test_the_loop_runs_sharded(image_folder, tmp_path):
  summary = _run(LOOP_SCRIPT, image_folder, str(tmp_path))
  assert summary['devices'] == 2 and summary['steps'] == 10
  assert os.path.isfile(tmp_path / 'eval.json')
