"""`tinycats bench` at its smallest settings: it runs the real steps and emits complete JSON lines."""
import json

import pytest

from conftest import run_tinycats
from tinycats import bench, cli

TINY = {'resnet18': ['--image-size', '32', '--set', 'model.width=8'],
        'dit': ['--image-size', '16', '--set', 'model.width=32', '--set', 'model.depth=1', '--set', 'model.heads=2',
                '--set', 'model.patch_size=4']}
TRAIN_STEP_FIELDS = {'kind', 'framework', 'model', 'batch', 'image_size', 'dtype', 'steps', 'devices', 'parameters',
                     'step_memory_bytes', 'cpu_model',
                     'compile_seconds', 'step_ms_median', 'step_ms_min', 'step_ms_p90', 'step_ms_max',
                     'images_per_sec', 'peak_memory_bytes', 'flops_per_step_per_device', 'achieved_tflops_per_device',
                     'peak_tflops_per_device', 'peak_source', 'mfu', 'backend', 'device', 'date', 'jax'}


def run_bench(capsys, *args):
  with pytest.raises(SystemExit) as done:
    cli.main(['bench', *args])
  assert done.value.code == 0
  return [json.loads(line) for line in capsys.readouterr().out.splitlines() if line.startswith('{')]


# The DiT pair runs by default; the ResNet pair (30 s, mostly compilation) with `pytest -m slow`.
@pytest.mark.parametrize('model', [pytest.param('resnet18', marks=pytest.mark.slow), 'dit'])
def test_train_step_beside_torch(model, capsys, tmp_path):
  results = tmp_path / 'results.jsonl'
  rows = run_bench(capsys, '--model', model, '--batch', '4', '--steps', '2', '--baseline', 'torch',
                   '--peak-tflops', '1.0', '--results', str(results), *TINY[model])
  jax_row = rows[0]
  assert TRAIN_STEP_FIELDS <= set(jax_row), TRAIN_STEP_FIELDS - set(jax_row)
  assert (jax_row['framework'], jax_row['model'], jax_row['batch'], jax_row['steps']) == ('jax', model, 4, 2)
  assert jax_row['step_ms_min'] <= jax_row['step_ms_median'] <= jax_row['step_ms_max']
  assert jax_row['flops_per_step_per_device'] > 0 and jax_row['peak_source'] == '--peak-tflops'
  assert 0 < jax_row['mfu'] < 1  # A CPU does far less than the 1 TFLOP/s peak given.
  assert jax_row['compile_seconds'] > 0 and jax_row['parameters'] > 0
  if 'skipped' in rows[1]:
    pytest.skip(rows[1]['skipped'])
  torch_row, comparison = rows[1], rows[2]
  assert torch_row['framework'] == 'torch' and torch_row['images_per_sec'] > 0
  assert {k for k in jax_row if k.startswith('step_ms')} == {k for k in torch_row if k.startswith('step_ms')}
  assert torch_row['backend'] == 'cpu' and torch_row['devices'] == 1
  assert abs(torch_row['parameters'] - jax_row['parameters']) / jax_row['parameters'] < 0.01  # Same model shapes.
  assert comparison['kind'] == 'comparison' and comparison['jax_over_torch'] > 0
  assert [json.loads(line) for line in results.read_text().splitlines()] == rows  # Appended as printed.


def test_pipeline(capsys):
  rows = run_bench(capsys, '--pipeline', '--image-size', '32', '--batch', '8', '--steps', '2', '--results', '')
  assert [r['stage'] for r in rows] == ['jpeg_decode_to_cache', 'host_gather_and_transfer',
                                       'cache_to_augmented_device_batch', 'device_cache_to_augmented_batch']
  assert all(r['images_per_sec'] > 0 for r in rows)


def test_kernels_beside_torch(capsys):
  rows = run_bench(capsys, '--kernels', '--batch', '1', '--steps', '1', '--dtype', 'f32', '--baseline', 'torch',
                   '--results', '')
  jax_rows = [r for r in rows if r['kind'] == 'kernel' and r['framework'] == 'jax']
  torch_rows = [r for r in rows if r['kind'] == 'kernel' and r['framework'] == 'torch']
  comparisons = [r for r in rows if r['kind'] == 'comparison']
  assert [r['name'] for r in jax_rows] == [r['name'] for r in torch_rows] == [r['name'] for r in comparisons] == [
      'dit_mlp_matmul', 'resnet_conv3x3']
  assert jax_rows[0]['shape'] == torch_rows[0]['shape'] == [64, 384, 1536]  # One image's 64 tokens.
  # A 2-core CPU does between 1 and 10,000 GFLOP/s: a unit slip (s vs ms, FLOPs vs GFLOPs) lands outside.
  assert all(1 < r['gflops_per_sec'] < 1e4 for r in jax_rows + torch_rows)


def test_profile_names_the_ops_that_take_the_time():
  # A child process: XLA:CPU names its ops in the trace only with a flag read when the backend starts.
  result = run_tinycats('bench', '--model', 'dit', '--batch', '4', '--steps', '1', '--profile', '5', '--results', '',
                        *TINY['dit'])
  assert result.returncode == 0, result.stderr[-3000:]
  ops = json.loads([line for line in result.stdout.splitlines() if line.startswith('{')][-1])['profile']
  assert 1 <= len(ops) <= 5 and sum(o['share'] for o in ops) <= 1 + 1e-9
  assert [o['ms_per_step'] for o in ops] == sorted((o['ms_per_step'] for o in ops), reverse=True)
  assert not any(bench._RUNTIME_EVENT.search(o['op']) for o in ops)  # XLA's ops, not the runtime around them.
  assert any('fusion' in o['op'] for o in ops)


def test_bad_settings_are_named(capsys):
  with pytest.raises(SystemExit) as done:
    cli.main(['bench', '--devices', '64', '--results', ''])
  assert done.value.code == 2 and '--devices 64' in capsys.readouterr().err


@pytest.mark.slow  # Compiles a ResNet train step (about 25 s); `pytest -m slow` runs it.
def test_epoch_on_a_folder(capsys, image_folder):
  rows = run_bench(capsys, '--epoch', 'configs/cats.py:smoke', '--results', '', '--set', 'data.source=folder',
                   '--set', f'data.folder={image_folder}', '--set', 'model.pretrained=', '--set', 'model.width=8',
                   '--set', 'data.image_size=32', '--set', 'data.cache_size=36', '--set', 'train.batch_size=16')
  (row,) = rows
  assert row['kind'] == 'epoch' and row['steps'] == row['images'] // 16 >= 2
  assert row['data_on_device']  # The loop's feed: the tiny split fits on the device.
  assert row['images_per_sec_after_compile'] > 0
