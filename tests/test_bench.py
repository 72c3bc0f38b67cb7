"""`tinycats bench` at its smallest settings: it runs the real steps and emits complete JSON lines."""

import json
import os

import numpy as np
import pytest
from conftest import run_tinycats

from benchmarks import speed
from tinycats import cli, config as config_lib

TINY = {
  'resnet18': ['--image-size', '32', '--config.model.width=8'],
  'dit': [
    '--image-size',
    '16',
    '--config.model.width=32',
    '--config.model.depth=1',
    '--config.model.heads=2',
    '--config.model.patch_size=4',
    '--config.model.overlap=1',
  ],
}
TRAIN_STEP_FIELDS = {
  'kind',
  'framework',
  'model',
  'batch',
  'image_size',
  'dtype',
  'steps',
  'devices',
  'parameters',
  'step_memory_bytes',
  'cpu_model',
  'compile_seconds',
  'step_ms_median',
  'step_ms_min',
  'step_ms_p90',
  'step_ms_max',
  'images_per_sec',
  'peak_memory_bytes',
  'flops_per_step_per_device',
  'achieved_tflops_per_device',
  'peak_tflops_per_device',
  'peak_source',
  'mfu',
  'backend',
  'device',
  'date',
  'jax',
}


def run_bench(capsys, *args):
  with pytest.raises(SystemExit) as done:
    cli.main(['bench', *args])
  assert done.value.code == 0
  return [json.loads(line) for line in capsys.readouterr().out.splitlines() if line.startswith('{')]


# The DiT pair runs by default; the ResNet pair (30 s, mostly compilation) with `pytest -m slow`.
@pytest.mark.parametrize('model', [pytest.param('resnet18', marks=pytest.mark.slow), 'dit'])
def test_train_step_beside_torch(model, capsys, tmp_path):
  results = tmp_path / 'results.jsonl'
  rows = run_bench(
    capsys,
    '--model',
    model,
    '--batch',
    '4',
    '--steps',
    '2',
    '--baseline',
    'torch',
    '--peak-tflops',
    '1.0',
    '--results',
    str(results),
    *TINY[model],
  )
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
  assert [r['stage'] for r in rows] == [
    'jpeg_decode_to_cache',
    'host_gather_and_transfer',
    'cache_to_augmented_device_batch',
    'device_cache_to_augmented_batch',
  ]
  assert all(r['images_per_sec'] > 0 for r in rows)


def test_kernels_beside_torch(capsys):
  rows = run_bench(
    capsys, '--kernels', '--batch', '1', '--steps', '1', '--dtype', 'f32', '--baseline', 'torch', '--results', ''
  )
  jax_rows = [r for r in rows if r['kind'] == 'kernel' and r['framework'] == 'jax']
  torch_rows = [r for r in rows if r['kind'] == 'kernel' and r['framework'] == 'torch']
  comparisons = [r for r in rows if r['kind'] == 'comparison']
  assert (
    [r['name'] for r in jax_rows]
    == [r['name'] for r in torch_rows]
    == [r['name'] for r in comparisons]
    == ['dit_mlp_matmul', 'resnet_conv3x3']
  )
  assert jax_rows[0]['shape'] == torch_rows[0]['shape'] == [64, 384, 1536]  # One image's 64 tokens.
  # A 2-core CPU does between 1 and 10,000 GFLOP/s: a unit slip (s vs ms, FLOPs vs GFLOPs) lands outside.
  assert all(1 < r['gflops_per_sec'] < 1e4 for r in jax_rows + torch_rows)


def test_profile_names_the_ops_that_take_the_time():
  # A child process: XLA:CPU names its ops in the trace only with a flag read when the backend starts.
  result = run_tinycats(
    'bench', '--model', 'dit', '--batch', '4', '--steps', '1', '--profile', '5', '--results', '', *TINY['dit']
  )
  assert result.returncode == 0, result.stderr[-3000:]
  ops = json.loads([line for line in result.stdout.splitlines() if line.startswith('{')][-1])['profile']
  assert 1 <= len(ops) <= 5 and sum(o['share'] for o in ops) <= 1 + 1e-9
  assert [o['ms_per_step'] for o in ops] == sorted((o['ms_per_step'] for o in ops), reverse=True)
  assert not any(speed._RUNTIME_EVENT.search(o['op']) for o in ops)  # XLA's ops, not the runtime around them.
  assert any('fusion' in o['op'] for o in ops)


def test_bad_settings_are_named(capsys):
  with pytest.raises(SystemExit) as done:
    cli.main(['bench', '--devices', '64', '--results', ''])
  assert done.value.code == 2 and '--devices 64' in capsys.readouterr().err


@pytest.mark.slow  # Compiles a ResNet train step (about 25 s); `pytest -m slow` runs it.
def test_epoch_on_a_folder(capsys, image_folder):
  rows = run_bench(
    capsys,
    '--epoch',
    'configs/cats.py:smoke',
    '--results',
    '',
    '--config.data.source=folder',
    f'--config.data.folder={image_folder}',
    '--config.model.pretrained=',
    '--config.model.width=8',
    '--config.data.image_size=32',
    '--config.data.cache_size=36',
    '--config.train.batch_size=16',
  )
  (row,) = rows
  assert row['kind'] == 'epoch' and row['steps'] == row['images'] // 16 >= 2
  assert row['data_on_device']  # The loop's feed: the tiny split fits on the device.
  assert row['images_per_sec_after_compile'] > 0


# `tinycats bench --quality`: the harness at test size (the recipes' quality is measured by the command, not here).
QUALITY_TINY = [
  '--per-class',
  '8',
  '--picture-size',
  '20',
  '--classes',
  '3',
  '--config.model.width=8',
  '--config.data.image_size=32',
  '--config.data.cache_size=36',
  '--config.train.batch_size=8',
  '--config.train.epochs=1',
  '--config.train.steps=0',
  '--config.data.test_fraction=0.2',
]
JUDGE_TINY = [
  '--judge-set',
  'model.width=8',
  '--judge-set',
  'data.image_size=32',
  '--judge-set',
  'data.cache_size=36',
  '--judge-set',
  'train.batch_size=8',
  '--judge-set',
  'train.epochs=1',
  '--judge-set',
  'train.steps=0',
]
DIT_QUALITY_TINY = [
  '--per-class',
  '8',
  '--picture-size',
  '20',
  '--classes',
  '3',
  '--config.model.width=32',
  '--config.model.depth=1',
  '--config.model.heads=2',
  '--config.data.image_size=16',
  '--config.data.cache_size=20',
  '--config.train.batch_size=8',
  '--config.train.epochs=1',
  '--config.train.steps=0',
  '--config.sample.steps=2',
  '--samples-per-class',
  '2',
]
QUALITY_FIELDS = {
  'kind',
  'case',
  'recipe',
  'overrides',
  'sweep',
  'classes',
  'per_class',
  'style',
  'examples',
  'steps',
  'total_steps',
  'best_step',
  'stopped_early',
  'train_seconds',
  'compile_seconds',
  'images_per_sec',
  'run_seconds',
  'data_seconds',
  'wall_seconds',
  'workdir',
  'backend',
  'device',
  'date',
  'jax',
}
CLASSIFY_FIELDS = QUALITY_FIELDS | {'test_accuracy', 'test_balanced_accuracy', 'test_recall', 'degenerate'}
GENERATE_FIELDS = QUALITY_FIELDS | {
  'test_flow_loss',
  'samples_per_class',
  'conditional_accuracy',
  'frechet_distance',
  'sample_per_class_accuracy',
  'worst_class_accuracy',
  'diversity',
  'per_class_diversity',
  'blockiness',
  'real_blockiness',
  'picture_size',
  'image_size',
  'real_conditional_accuracy',
  'real_per_class_accuracy',
  'evaluate_seconds',
  'judge_workdir',
  'judge_reused',
  'judge_test_accuracy',
  'judge_test_balanced_accuracy',
  'judge_train_seconds',
  'judge_seconds',
  'judge_held_out',
}


def check_times(row):
  assert row['wall_seconds'] >= row['run_seconds'] >= row['train_seconds'] > 0, row
  assert row['compile_seconds'] > 0 and row['data_seconds'] >= 0


def check_classifier_row(row, case, classes, per_class):
  assert CLASSIFY_FIELDS <= set(row), CLASSIFY_FIELDS - set(row)
  style = 'HARD' if case == 'small' else 'EASY'
  assert (row['kind'], row['case'], row['recipe'], row['style']) == ('quality', case, 'configs/cats.py:smoke', style)
  assert row['classes'] == sorted(classes) and row['per_class'] == per_class
  assert 'model.pretrained=' in row['overrides']  # From scratch.
  assert sum(row['examples'].values()) == len(classes) * per_class and min(row['examples'].values()) >= len(classes)
  assert 0 <= row['test_accuracy'] <= 1 and 0 <= row['test_balanced_accuracy'] <= 1
  assert set(row['test_recall']) == set(classes) and all(0 <= r <= 1 for r in row['test_recall'].values())
  assert row['steps'] == row['total_steps'] == row['examples']['train'] // 8  # One epoch of batch 8.
  check_times(row)


def test_quality_small_runs_the_recipe_end_to_end(capsys, tmp_path):
  results = tmp_path / 'results.jsonl'
  with pytest.raises(SystemExit) as done:
    cli.main(
      [
        'bench',
        '--quality',
        'small',
        '--workdir',
        str(tmp_path / 'q'),
        '--results',
        str(results),
        *QUALITY_TINY,
        '--per-class',
        '12',
      ]
    )  # Two classes: enough to train one batch of 8.
  assert done.value.code == 0
  out, err = capsys.readouterr()
  rows = [json.loads(line) for line in out.splitlines()]  # Only JSON on stdout.
  (row,) = rows
  check_classifier_row(row, 'small', ['cat', 'dog'], 12)
  assert row['sweep'] is None and row['workdir'].startswith(str(tmp_path / 'q' / 'small'))
  assert (
    json.loads((tmp_path / 'q' / 'small' / row['workdir'].rsplit('/', 1)[1] / 'summary.json').read_text())[
      'test_accuracy'
    ]
    == row['test_accuracy']
  )  # The loop's own figures.
  assert [json.loads(line) for line in results.read_text().splitlines()] == rows
  header, line = err.rstrip().splitlines()[-2:]  # The human-readable table ends stderr.
  assert header.split()[0] == 'case' and line.split()[:2] == ['small', '-']


def test_quality_table():
  from benchmarks import quality

  row = dict(
    case='generator',
    sweep={'train.learning_rate': '0.001'},
    test_accuracy=None,
    conditional_accuracy=0.25,
    worst_class_accuracy=0.05,
    real_conditional_accuracy=0.75,
    frechet_distance=12.5,
    diversity=0.625,
    judge_test_accuracy=0.9,
    steps=40,
    train_seconds=10.0,
    wall_seconds=30.0,
  )
  lines = quality.table([row]).splitlines()
  assert lines[0].split()[:3] == ['case', 'sweep', 'accuracy'] and len(lines) == 2
  assert lines[0].split()[5] == 'worst' and lines[0].split()[9:11] == ['divers.', 'blocky']  # 'real acc': 2 words.
  assert lines[1].split() == [
    'generator',
    'learning_rate=0.001',
    '-',
    '-',
    '0.250',
    '0.050',
    '0.750',
    '12.50',
    '0.625',
    '-',  # No blockiness in this row.
    '0.900',
    '40',
    '10.0',
    '30.0',
  ]


def test_quality_sweep_grid():
  from benchmarks import quality
  from tinycats.errors import UserError

  axes = quality.parse_sweep(['learning_rate=1e-3,3e-3', 'epochs=3,6', 'seed=1'])
  assert axes == [('learning_rate', ['1e-3', '3e-3']), ('epochs', ['3', '6']), ('seed', ['1'])]
  points = quality.grid(axes, [quality.CLASSIFIER_RECIPE, quality.GENERATOR_RECIPE])
  assert points == [
    ['train.learning_rate=1e-3', 'train.epochs=3', 'seed=1'],
    ['train.learning_rate=1e-3', 'train.epochs=6', 'seed=1'],
    ['train.learning_rate=3e-3', 'train.epochs=3', 'seed=1'],
    ['train.learning_rate=3e-3', 'train.epochs=6', 'seed=1'],
  ]
  assert quality.grid([], [quality.CLASSIFIER_RECIPE]) == [[]]  # No sweep: one run.
  with pytest.raises(UserError, match='FIELD=V1,V2'):
    quality.parse_sweep(['learning_rate'])
  has_steps = 'steps' in config_lib.load_config_file(quality._spec(quality.CLASSIFIER_RECIPE)).train
  if has_steps:
    assert quality.grid([('steps', ['10'])], [quality.CLASSIFIER_RECIPE]) == [['train.steps=10']]
  else:  # The length is train.epochs: a steps sweep says so.
    with pytest.raises(UserError, match='epochs'):
      quality.grid([('steps', ['10'])], [quality.CLASSIFIER_RECIPE])


def test_quality_refusals_name_the_way_out(capsys, tmp_path):
  def refused(*args):
    with pytest.raises(SystemExit) as done:
      cli.main(['bench', '--results', '', '--workdir', str(tmp_path), *args])
    assert done.value.code == 2
    return capsys.readouterr().err

  assert '--judge' in refused('--judge', str(tmp_path))  # Only with --quality.
  assert 'model.widht' in refused('--quality', 'classifier', '--config.model.widht=8')
  assert 'flow.label_dropout' in refused('--quality', 'small', '--config.flow.label_dropout=0.2')  # A DiT field.
  assert '--set is now --config.FIELD=VALUE' in refused('--set', 'model.width=8')  # The old spelling.
  assert 'summary.json' in refused('--quality', 'generator', '--judge', str(tmp_path), *DIT_QUALITY_TINY)
  assert 'reused as it is' in refused('--quality', 'generator', '--judge', str(tmp_path), *JUDGE_TINY)


def test_generator_view_holds_the_generators_training_pixels(tmp_path):
  """The judge's copy of the data is, pixel for pixel, what the generator's transform makes of each picture."""
  from PIL import Image

  from benchmarks import quality
  from tinycats.data import shapes
  from tinycats.evaluators import samples

  folder, _ = quality.data_folder(str(tmp_path), shapes.SHAPES[:2], 3, 'EASY', 30)
  config, _ = quality.load_config(
    quality.GENERATOR_RECIPE, folder, ['data.image_size=16', 'data.cache_size=24', 'data.eval_crop=0.8']
  )
  view = quality.generator_view(folder, quality.view_folder(folder, config.data), config.data)
  split = quality._load(config, splits=('train',)).splits['train']
  expected = samples.real_images(config, split)
  written = np.stack([np.asarray(Image.open(os.path.join(view, name))) for name in split.names])
  assert written.shape == (len(split), 16, 16, 3)
  np.testing.assert_array_equal(written, expected)


@pytest.mark.slow  # Two tiny ResNet runs (about 60 s on 2 cores).
def test_quality_classifier_sweep(capsys, tmp_path):
  rows = run_bench(
    capsys,
    '--quality',
    'classifier',
    '--workdir',
    str(tmp_path),
    '--results',
    '',
    *QUALITY_TINY,
    '--sweep',
    'learning_rate=1e-3,3e-3',
  )
  assert [r['sweep'] for r in rows] == [{'train.learning_rate': '1e-3'}, {'train.learning_rate': '3e-3'}]
  for row in rows:
    check_classifier_row(row, 'classifier', ['circle', 'ring', 'triangle'], 8)
  assert rows[0]['workdir'] != rows[1]['workdir']  # A fresh workdir per run: none resumes another.
  assert rows[0]['data_seconds'] > 0 and rows[1]['data_seconds'] == 0  # The data folder is written once.


@pytest.mark.slow  # A judge and two DiT runs (about 2 minutes on 2 cores).
def test_quality_generator_and_its_reused_judge(capsys, tmp_path):
  (first,) = run_bench(
    capsys, '--quality', 'generator', '--workdir', str(tmp_path), '--results', '', *DIT_QUALITY_TINY, *JUDGE_TINY
  )
  assert GENERATE_FIELDS <= set(first), GENERATE_FIELDS - set(first)
  assert (first['case'], first['recipe'], first['style']) == ('generator', 'configs/dit.py:smoke', 'CENTRED')
  assert first['classes'] == ['circle', 'ring', 'triangle'] and not first['judge_reused']
  assert first['judge_held_out'] is True  # The judge never trained on the generator's test images.
  for key in ('conditional_accuracy', 'real_conditional_accuracy', 'judge_test_accuracy'):
    assert 0 <= first[key] <= 1, key
  assert first['frechet_distance'] >= 0 and first['test_flow_loss'] > 0
  assert first['worst_class_accuracy'] == min(first['sample_per_class_accuracy'].values())
  assert (first['picture_size'], first['image_size']) == (20, 16)
  assert first['evaluate_seconds'] > 0 and first['judge_seconds'] > first['judge_train_seconds'] > 0
  check_times(first)
  judge_config = json.loads((tmp_path / 'judge' / os.path.basename(first['judge_workdir']) / 'config.json').read_text())
  assert judge_config['data']['image_size'] == 32 and judge_config['model']['pretrained'] == ''
  assert judge_config['data']['folder'].endswith('-as-16px-20-crop1')  # The generator's view of the data.

  (second,) = run_bench(
    capsys,
    '--quality',
    'generator',
    '--workdir',
    str(tmp_path),
    '--results',
    '',
    *DIT_QUALITY_TINY,
    '--judge',
    first['judge_workdir'],
  )
  assert second['judge_reused'] and second['judge_workdir'] == first['judge_workdir']
  assert second['judge_test_accuracy'] == first['judge_test_accuracy']  # Read back, not retrained.
  assert second['judge_seconds'] < 5 and second['workdir'] != first['workdir']
  assert 0 <= second['conditional_accuracy'] <= 1


def test_generator128_case_settings(tmp_path):
  """`generator128`: `configs/dit.py:smoke128`, 128 px pictures of 64 tokens (patch 16) with the default recipe's
  block, times and sampling, from pictures large enough for its 144 px cache; a judge whose cache holds the 128 px
  view at its own input size."""
  from benchmarks import quality

  assert 'generator128' in quality.CASES and 'generator128' not in quality.ALL
  folder, _ = quality.data_folder(str(tmp_path), ['circle', 'ring'], 2, 'CENTRED', quality.GENERATOR128_PICTURE_SIZE)
  assert '-160px-' in os.path.basename(folder)
  config, _ = quality.load_config(quality.GENERATOR128_RECIPE, folder, [])
  d = config.data
  assert (d.image_size, d.cache_size, config.model.patch_size) == (128, 144, 16)
  assert (d.image_size // config.model.patch_size) ** 2 == 64  # As the 32 px smoke with patch 4.
  assert d.cache_size > d.image_size and quality.GENERATOR128_PICTURE_SIZE > d.cache_size  # The cache shrinks.
  default = config_lib.load('configs/dit.py')
  for field in ('flow', 'sample'):
    assert {**config[field].to_dict(), 'per_class': 0} == {**default[field].to_dict(), 'per_class': 0}, field
  block = ('norm', 'qk_norm', 'mlp', 'rope', 'bottleneck', 'class_tokens', 'patch_size', 'overlap')
  assert {k: config.model[k] for k in block} == {k: default.model[k] for k in block}
  judge, _ = quality.load_config(quality.CLASSIFIER_RECIPE, quality.view_folder(folder, d), quality.JUDGE_OVERRIDES)
  assert judge.data.image_size <= judge.data.cache_size and judge.data.cache_size >= 128  # No 128 px view upsampled.


@pytest.mark.slow  # A judge (at its own 96 px) and a DiT at 128 px, both tiny (about a minute on 2 cores).
def test_quality_generator128_at_128_px(capsys, tmp_path):

  (row,) = run_bench(
    capsys,
    '--quality',
    'generator128',
    '--workdir',
    str(tmp_path),
    '--results',
    '',
    '--per-class',
    '12',
    '--classes',
    '3',
    *('--config.model.width=32', '--config.model.depth=1', '--config.model.heads=2'),
    *('--config.train.batch_size=8', '--config.train.epochs=1', '--config.train.steps=0'),
    *('--config.sample.steps=2', '--config.data.test_fraction=0.25', '--samples-per-class', '2'),
    *('--judge-set', 'model.width=8', '--judge-set', 'train.batch_size=8', '--judge-set', 'train.epochs=1'),
    *('--judge-set', 'train.steps=0'),
  )
  assert GENERATE_FIELDS <= set(row), GENERATE_FIELDS - set(row)
  assert (row['case'], row['recipe'], row['style']) == ('generator128', 'configs/dit.py:smoke128', 'CENTRED')
  assert (row['picture_size'], row['image_size']) == (160, 128)
  assert row['workdir'].startswith(str(tmp_path / 'generator128'))
  config = json.loads((tmp_path / 'generator128' / os.path.basename(row['workdir']) / 'config.json').read_text())
  assert (config['data']['image_size'], config['data']['cache_size'], config['model']['patch_size']) == (128, 144, 16)
  assert '-160px-' in config['data']['folder']
  judge_config = json.loads((tmp_path / 'judge' / os.path.basename(row['judge_workdir']) / 'config.json').read_text())
  assert judge_config['data']['folder'].endswith('-as-128px-144-crop1')  # The generator's 128 px view.
  assert (judge_config['data']['image_size'], judge_config['data']['cache_size']) == (96, 128)  # The smoke's own.
  assert row['judge_held_out'] is True
  assert row['worst_class_accuracy'] == min(row['sample_per_class_accuracy'].values())
  assert set(row['per_class_diversity']) == set(row['classes'])  # 2 samples and 3 real test pictures per class.
  assert row['diversity'] == pytest.approx(np.mean(list(row['per_class_diversity'].values())))
  assert all(v >= 0 for v in row['per_class_diversity'].values())
  samples = json.loads((tmp_path / 'generator128' / os.path.basename(row['workdir']) / 'eval.json').read_text())
  assert samples['samples']['diversity'] == row['diversity']  # eval.json carries it too.
  assert row['blockiness'] > 0 and samples['samples']['blockiness'] == row['blockiness']  # 16 px patches.
  assert samples['samples']['real']['blockiness'] == row['real_blockiness']
  check_times(row)
