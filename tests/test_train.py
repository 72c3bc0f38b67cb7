"""End to end: the smoke recipe (tiny model) trains, checkpoints, evaluates and predicts."""
import json
import os

import jax
import numpy as np
import pytest

from conftest import tiny_config
from tinycats import Classifier, evaluate
from tinycats.train import loop, state as state_lib
from tinycats.train.tasks import TASKS


def test_folder_run_learns_and_leaves_its_files(folder_run):
  workdir, summary = folder_run
  for name in ('config.json', 'metrics.jsonl', 'eval.json', 'curves.png', 'confusion.png', 'summary.json'):
    assert os.path.isfile(os.path.join(workdir, name)), name
  assert summary['steps'] == summary['total_steps'] == 6 * (160 // 16)
  assert summary['best'] >= 0.8  # Chance is 0.5.
  assert summary['test_accuracy'] >= 0.75
  assert sum(summary['skipped_images'].values()) == 1  # The corrupt file, wherever the split put it.
  assert summary['compute_dtype'] == 'float32'  # model.dtype 'auto' on XLA:CPU.

  report = json.load(open(os.path.join(workdir, 'eval.json')))
  assert report['classes'] == ['cat', 'other'] and report['split'] == 'test'
  assert report['num_examples'] == 20 and np.sum(report['confusion_matrix']) == 20
  assert set(report['per_class']['cat']) == {'precision', 'recall', 'f1', 'support'}
  assert report['step'] == summary['best_step']

  rows = [json.loads(line) for line in open(os.path.join(workdir, 'metrics.jsonl'))]
  train_rows = [r for r in rows if 'train_loss' in r]
  assert {'learning_rate', 'grad_norm', 'train_accuracy', 'train_loss'} <= set(train_rows[-1])
  assert any('images_per_sec' in r for r in train_rows)
  assert len([r for r in rows if 'val_accuracy' in r]) == 6
  assert train_rows[-1]['train_loss'] < train_rows[0]['train_loss']


def test_evaluate_command_rewrites_eval_json(folder_run):
  workdir, _ = folder_run
  report = evaluate.evaluate(workdir, split='val')
  assert report['split'] == 'val' and report['num_examples'] == 20
  assert json.load(open(os.path.join(workdir, 'eval.json')))['split'] == 'val'
  with pytest.raises(ValueError, match='unknown split'):
    evaluate.evaluate(workdir, split='dev')


def test_classifier_predicts_any_size(folder_run, image_folder):
  workdir, _ = folder_run
  clf = Classifier.load(workdir)
  assert clf.classes == ['cat', 'other']
  rng = np.random.default_rng(1)
  import fake_pets
  cats = [fake_pets.striped_image(rng, True, (50, 70)) for _ in range(8)]
  dogs = [fake_pets.striped_image(rng, False, (90, 40)) for _ in range(8)]
  probs = clf.predict(cats + dogs)
  assert probs.shape == (16, 2)
  np.testing.assert_allclose(probs.sum(-1), 1.0, rtol=1e-5)
  accuracy = np.mean(probs.argmax(-1) == np.array([0] * 8 + [1] * 8))
  assert accuracy >= 0.75
  assert clf.predict(cats[0]).shape == (1, 2)  # A single HWC image.
  np.testing.assert_allclose(clf.predict(np.stack(cats[:3])), probs[:3], atol=1e-5)


def test_predict_command_reports_bad_files_and_continues(folder_run, image_folder, tmp_path):
  from conftest import run_tinycats
  workdir, _ = folder_run
  empty = tmp_path / 'empty.jpg'
  empty.write_bytes(b'')
  text = tmp_path / 'notes.jpg'
  text.write_text('hello')
  good = os.path.join(image_folder, 'cat', '0.jpg')
  result = run_tinycats('predict', '--workdir', workdir, good, str(tmp_path / 'missing.jpg'), str(empty), str(text))
  assert result.returncode == 1, result.stderr[-2000:]
  rows = [json.loads(line) for line in result.stdout.splitlines()]
  assert [r['file'] for r in rows] == [good, str(tmp_path / 'missing.jpg'), str(empty), str(text)]
  assert rows[0]['label'] in ('cat', 'other') and set(rows[0]['probs']) == {'cat', 'other'}
  assert all('error' in r for r in rows[1:]) and 'label' not in rows[1]


def test_restoring_into_another_shape_names_the_leaf(folder_run):
  workdir, _ = folder_run
  config = tiny_config('--config.data.source=folder', '--config.data.folder=unused', '--config.model.width=16')
  task = TASKS['classify'](config, ['cat', 'other'])
  with pytest.raises(ValueError, match=r'conv1\.kernel: checkpoint \(7, 7, 3, 8\) vs model \(7, 7, 3, 16\)'):
    state_lib.load_for_inference(workdir, config, task)


def test_checkpoints_store_float32_model_and_optimizer(folder_run):
  import orbax.checkpoint as ocp
  workdir, summary = folder_run
  manager = ocp.CheckpointManager(os.path.join(workdir, 'checkpoints'), item_handlers={
      'model': ocp.StandardCheckpointHandler(), 'optimizer': ocp.StandardCheckpointHandler(),
      'meta': ocp.JsonCheckpointHandler()})
  step = manager.latest_step()
  metadata = manager.item_metadata(step)
  model_dtypes = {str(leaf.dtype) for leaf in jax.tree.leaves(metadata['model'])}
  assert model_dtypes == {'float32'}
  optimizer_floats = {str(leaf.dtype) for leaf in jax.tree.leaves(metadata['optimizer']) if 'int' not in str(leaf.dtype)}
  assert optimizer_floats == {'float32'}  # Adam moments; the step counters are integers.
  meta = manager.restore(step, args=ocp.args.Composite(meta=ocp.args.JsonRestore()))['meta']
  assert meta['step'] == step and meta['data']['batch_in_epoch'] == 0 and len(meta['rng']) == 2
  # Retention: the last train.keep_checkpoints (2) and the best by validation accuracy.
  assert set(manager.all_steps()) == {step - 10, step, summary['best_step']}


def test_tfds_source_trains_on_prepared_pets(prepared_pets, tmp_path):
  """The TFDS path end to end: data prepared by `tinycats prepare`, read with tfds.data_source."""
  config = tiny_config(f'--config.data.data_dir={prepared_pets}', '--config.data.val_fraction=0.2',
                       '--config.train.batch_size=8')
  summary = loop.train_and_evaluate(config, str(tmp_path))
  report = json.load(open(tmp_path / 'eval.json'))
  assert report['classes'] == ['cat', 'other']
  assert report['num_examples'] == 37  # The whole TFDS test split of the fake archives.
  assert summary['steps'] == 6 * (148 // 8)  # 185 fake train images, 20% held out for validation.
  # Always answering 'other' would score 25/37 = 0.68 here.
  assert report['accuracy'] >= 0.8


def test_breed_labels(prepared_pets):
  import tinycats.data
  config = tiny_config(f'--config.data.data_dir={prepared_pets}', '--config.data.labels=breed')
  data = tinycats.data.load(config, splits=('test',))
  assert len(data.classes) == 37 and data.classes[0] == 'Abyssinian'
  assert sorted(set(data.splits['test'].labels.tolist())) == list(range(37))
