"""End to end: the smoke recipe (tiny model) trains, checkpoints, evaluates and predicts."""

import json
import os

import jax
import numpy as np
import pytest
from conftest import run_main, run_tinycats, tiny_config

from tinycats import Classifier, cli, evaluate, metrics, writers
from tinycats.data import shapes
from tinycats.train import loop, state as state_lib
from tinycats.train.tasks import TASKS


def test_folder_run_learns_and_leaves_its_files(folder_run):
  workdir, summary = folder_run
  for name in ('config.json', 'metrics.jsonl', 'eval.json', 'curves.png', 'confusion.png', 'summary.json'):
    assert os.path.isfile(os.path.join(workdir, name)), name
  assert summary['steps'] == summary['total_steps'] == 200  # train.steps: the budget, whatever the data's size.
  # Chance is 0.5; 40 test pictures that only the ears tell apart: 0.7 or more by chance has odds below 1%.
  assert summary['best'] >= 0.7 and summary['test_balanced_accuracy'] >= 0.7, summary
  assert sum(summary['skipped_images'].values()) == 1  # The corrupt file, wherever the split put it.
  assert summary['compute_dtype'] == 'float32'  # model.dtype 'auto' on XLA:CPU.

  report = json.load(open(os.path.join(workdir, 'eval.json')))
  assert report['classes'] == ['cat', 'other'] and report['split'] == 'test'
  assert report['num_examples'] == 40 and np.sum(report['confusion_matrix']) == 40
  assert set(report['per_class']['cat']) == {'precision', 'recall', 'f1', 'support'}
  assert report['step'] == summary['best_step']
  assert summary['metric'] == 'val_balanced_accuracy' and report['degenerate'] is None
  assert summary['test_balanced_accuracy'] == report['balanced_accuracy'] == np.mean(list(report['recall'].values()))

  rows = [json.loads(line) for line in open(os.path.join(workdir, 'metrics.jsonl'))]
  train_rows = [r for r in rows if 'train_loss' in r]
  assert {'learning_rate', 'grad_norm', 'train_accuracy', 'train_loss'} <= set(train_rows[-1])
  assert any('images_per_sec' in r for r in train_rows)
  assert len([r for r in rows if 'val_accuracy' in r and 'val_balanced_accuracy' in r]) == 4  # Every 50 steps.
  assert train_rows[-1]['train_loss'] < train_rows[0]['train_loss']


def test_evaluate_writes_its_splits_own_report(folder_run):
  workdir, _ = folder_run
  report = evaluate.evaluate(workdir, split='val')
  assert (
    report['split'] == 'val' and report['num_examples'] + report['skipped_images'] == 40
  )  # Wherever the corrupt file is.
  assert json.load(open(os.path.join(workdir, 'eval_val.json')))['split'] == 'val'  # eval.json stays the test's.
  with pytest.raises(ValueError, match='unknown split'):
    evaluate.evaluate(workdir, split='dev')


def test_evaluate_another_checkpoint_writes_its_own_files(folder_run, tmp_path):
  """`--step N` scores that checkpoint, in eval_stepN.json and confusion_stepN.png; the best's files stay."""
  import shutil

  from tinycats.train import lock

  workdir = str(tmp_path / 'run')
  shutil.copytree(folder_run[0], workdir, ignore=shutil.ignore_patterns(lock.LOCK))
  best = json.load(open(os.path.join(workdir, 'eval.json')))
  kept = sorted(int(d) for d in os.listdir(os.path.join(workdir, 'checkpoints')) if d.isdigit())
  other = next(s for s in reversed(kept) if s != best['step'])
  result = run_main(cli.main, 'evaluate', '--workdir', workdir, '--step', str(other))
  assert result.returncode == 0, result.stderr
  report = json.load(open(os.path.join(workdir, f'eval_step{other}.json')))
  assert (report['step'], report['checkpoint'], report['split']) == (other, 'chosen', 'test')
  assert os.path.isfile(os.path.join(workdir, f'confusion_step{other}.png'))
  assert json.load(open(os.path.join(workdir, 'eval.json'))) == best  # The best's report is untouched.
  missing = run_main(cli.main, 'evaluate', '--workdir', workdir, '--step', '7')
  assert missing.returncode == 2 and len(missing.stderr.strip().splitlines()) == 1
  assert f'no checkpoint of step 7; it keeps steps {", ".join(map(str, kept))}' in missing.stderr


def test_balanced_accuracy_and_recall_by_hand():
  # 6 cats, 3 others, 1 fox; a model that gets 5 cats, 1 other and no fox right.
  labels = np.array([0, 0, 0, 0, 0, 0, 1, 1, 1, 2])
  predictions = np.array([0, 0, 0, 0, 0, 1, 1, 0, 0, 0])
  report = metrics.classification_report(labels, predictions, ['cat', 'other', 'fox'])
  assert report['accuracy'] == 0.6
  assert report['recall'] == {'cat': 5 / 6, 'other': 1 / 3, 'fox': 0.0}
  assert report['balanced_accuracy'] == (5 / 6 + 1 / 3 + 0.0) / 3
  assert report['degenerate'] is None
  # A class absent from the labels does not count; answering one class scores 1/K, whatever the majority.
  assert metrics.balanced_accuracy(np.array([0, 0, 1]), np.array([0, 0, 1]), 3) == 1.0
  always_cat = metrics.classification_report(labels, np.zeros(10, int), ['cat', 'other', 'fox'])
  assert always_cat['accuracy'] == 0.6 and always_cat['balanced_accuracy'] == 1 / 3
  assert always_cat['degenerate'] == 'predicts only "cat" for all 10 images'
  one_class_split = metrics.classification_report(np.zeros(4, int), np.zeros(4, int), ['cat', 'other'])
  assert one_class_split['degenerate'] is None  # Right for every image of a one-class split.


def test_calibration_by_hand():
  probs = np.array([[0.9, 0.1], [0.6, 0.4], [0.2, 0.8], [0.55, 0.45], [0.5, 0.5]])
  labels = np.array([0, 1, 1, 0, 1])  # Right, wrong, right, right, wrong (a tie answers class 0).
  c = metrics.calibration(labels, probs, bins=5)
  assert c['count'] == [0, 0, 3, 1, 1]  # Bins (0.4, 0.6] holds 0.6, 0.55 and 0.5; 0.8 and 0.9 one each.
  assert c['accuracy'][2:] == [1 / 3, 1.0, 1.0] and np.isnan(c['accuracy'][0])
  np.testing.assert_allclose(c['confidence'][2:], [0.55, 0.8, 0.9])
  np.testing.assert_allclose(c['ece'], (3 * abs(1 / 3 - 0.55) + 0.2 + 0.1) / 5)
  assert metrics.calibration(np.array([0, 1]), np.eye(2))['ece'] == 0.0  # Sure and right.


def test_a_model_that_answers_one_class_is_reported(folder_run, tmp_path, monkeypatch, capsys):
  import shutil

  from tinycats.evaluators import classification

  workdir = str(tmp_path / 'run')
  shutil.copytree(folder_run[0], workdir)  # Its eval.json stays the shared run's.
  monkeypatch.setattr(
    classification,
    'predictor',
    lambda *args, **kwargs: lambda images, sizes: np.tile([0.0, 1.0], (len(images), 1)),
  )
  report = evaluate.evaluate(workdir, split='val')
  n = report['num_examples']
  assert report['degenerate'] == f'predicts only "other" for all {n} images' and report['balanced_accuracy'] == 0.5
  assert json.load(open(os.path.join(workdir, 'eval_val.json')))['degenerate'] == report['degenerate']
  warnings = [line for line in capsys.readouterr().err.splitlines() if line.startswith('warning:')]
  assert warnings == [
    f'warning: the checkpoint at step {report["step"]} of {workdir} predicts only "other" for all '
    f'{n} images of the val split'
  ]


def test_classifier_predicts_any_size(folder_run, image_folder):
  workdir, _ = folder_run
  clf = Classifier.load(workdir)
  assert clf.classes == ['cat', 'other']
  rng = np.random.default_rng(1)
  import fake_pets

  cats = [fake_pets.pet_image(rng, True, (60, 90), shapes.EASY) for _ in range(20)]  # Not the training sizes.
  dogs = [fake_pets.pet_image(rng, False, (110, 70), shapes.EASY) for _ in range(20)]
  probs = clf.predict(cats + dogs)
  assert probs.shape == (40, 2)
  np.testing.assert_allclose(probs.sum(-1), 1.0, rtol=1e-5)
  accuracy = np.mean(probs.argmax(-1) == np.array([0] * 20 + [1] * 20))
  assert accuracy >= 0.7  # Chance 0.5.
  assert clf.predict(cats[0]).shape == (1, 2)  # A single HWC image.
  np.testing.assert_allclose(clf.predict(np.stack(cats[:3])), probs[:3], atol=1e-5)
  # The network itself on the same inputs gives the same answer (what saliency's gradients go through).
  logits = clf.network()(clf.inputs(cats[:3] + dogs[:3]))
  np.testing.assert_allclose(jax.nn.softmax(logits), probs[[0, 1, 2, 20, 21, 22]], atol=1e-5)
  pixels = clf.inputs(dogs[:2], normalized=False)
  assert pixels.shape == (2, clf.config.data.image_size, clf.config.data.image_size, 3) and 0 <= pixels.min()


def test_predict_command_reports_bad_files_and_continues(folder_run, image_folder, tmp_path):
  workdir, _ = folder_run
  empty = tmp_path / 'empty.jpg'
  empty.write_bytes(b'')
  text = tmp_path / 'notes.jpg'
  text.write_text('hello')
  good = os.path.join(image_folder, 'cat', '0.jpg')
  result = run_main(
    cli.main, 'predict', '--workdir', workdir, good, str(tmp_path / 'missing.jpg'), str(empty), str(text)
  )
  assert result.returncode == 2, result.stderr[-2000:]  # The user's files: a user error, not a bug (1).
  assert result.stderr.strip().splitlines()[-1] == 'tinycats predict: 3 of 4 file(s) could not be read'
  assert str(empty) in result.stderr and str(text) in result.stderr
  rows = [json.loads(line) for line in result.stdout.splitlines()]
  assert [r['file'] for r in rows] == [good, str(tmp_path / 'missing.jpg'), str(empty), str(text)]
  assert rows[0]['label'] in ('cat', 'other') and set(rows[0]['probs']) == {'cat', 'other'}
  assert all('error' in r for r in rows[1:]) and 'label' not in rows[1]


def test_restoring_into_another_shape_names_the_leaf(folder_run):
  workdir, _ = folder_run
  config = tiny_config('--config.data.source=folder', '--config.data.folder=unused', '--config.model.width=16')
  task = TASKS['classifier'](config, ['cat', 'other'])
  with pytest.raises(ValueError, match=r'conv1\.kernel: checkpoint \(7, 7, 3, 8\) vs model \(7, 7, 3, 16\)'):
    state_lib.restore_model(workdir, task)


def test_checkpoints_store_float32_model_and_optimizer(folder_run):
  import orbax.checkpoint as ocp

  workdir, summary = folder_run
  manager = ocp.CheckpointManager(
    os.path.join(workdir, 'checkpoints'),
    item_handlers={
      'model': ocp.StandardCheckpointHandler(),
      'optimizer': ocp.StandardCheckpointHandler(),
      'meta': ocp.JsonCheckpointHandler(),
    },
  )
  step = manager.latest_step()
  metadata = manager.item_metadata(step)
  model_dtypes = {str(leaf.dtype) for leaf in jax.tree.leaves(metadata['model'])}
  assert model_dtypes == {'float32'}
  optimizer_floats = {
    str(leaf.dtype) for leaf in jax.tree.leaves(metadata['optimizer']) if 'int' not in str(leaf.dtype)
  }
  assert optimizer_floats == {'float32'}  # Adam moments; the step counters are integers.
  meta = manager.restore(step, args=ocp.args.Composite(meta=ocp.args.JsonRestore()))['meta']
  assert meta['step'] == step and meta['data']['batch_in_epoch'] == 0 and len(meta['rng']) == 2
  # Retention: the last train.keep_checkpoints (2) and the best by validation accuracy.
  assert set(manager.all_steps()) == {step - 50, step, summary['best_step']}  # Evaluations every 50 steps.


def test_tfds_source_trains_on_prepared_pets(prepared_pets, pets_archives, tmp_path):
  """The TFDS path end to end: data prepared by `tinycats prepare`, read with tfds.data_source.

  Whether a network learns the ears is `folder_run`'s test; here, that the labels arrive intact."""
  config = tiny_config(
    f'--config.data.data_dir={prepared_pets}', '--config.data.val_fraction=0.2', '--config.train.batch_size=8'
  )
  summary = loop.train_and_evaluate(config, str(tmp_path))
  report = json.load(open(tmp_path / 'eval.json'))
  assert report['classes'] == ['cat', 'other']
  assert report['num_examples'] == 37  # The whole TFDS test split of the fake archives.
  assert summary['steps'] == 6 * (148 // 8)  # 185 fake train images, 20% held out for validation.
  species = pets_archives[1]['species_counts']['test']  # What the archives hold: 12 cats, 25 dogs.
  assert {name: c['support'] for name, c in report['per_class'].items()} == {
    'cat': species['cat'],
    'other': species['other'],
  }
  assert np.sum(report['confusion_matrix']) == 37 and 0 <= report['balanced_accuracy'] <= 1
  # Home after Modal: the same archives prepared again elsewhere are the same pictures (data.json's record of
  # the split matches), so `evaluate --data-dir` scores the run there.
  home = str(tmp_path / 'home-tfds')
  prepared = run_tinycats('prepare', '--archives', pets_archives[0], '--data-dir', home, '--no-verify')
  assert prepared.returncode == 0, prepared.stderr[-3000:]
  again = run_main(cli.main, 'evaluate', '--workdir', str(tmp_path), '--data-dir', home)
  assert again.returncode == 0, again.stderr[-3000:]
  assert json.loads(again.stdout)['accuracy'] == report['accuracy']


def test_tfds_validation_is_stratified_with_a_floor(prepared_pets):
  import tinycats.data

  config = tiny_config(f'--config.data.data_dir={prepared_pets}', '--config.data.val_fraction=0.1')
  data = tinycats.data.load(config, splits=('train', 'val'))
  # 60 fake cats and 125 dogs: 10% of the dogs (12), and of the cats the floor of 10, more than 10% (6).
  assert np.bincount(data.splits['val'].labels).tolist() == [10, 12]
  assert np.bincount(data.splits['train'].labels).tolist() == [50, 113]


def test_breed_labels(prepared_pets):
  import tinycats.data

  config = tiny_config(f'--config.data.data_dir={prepared_pets}', '--config.data.labels=breed')
  data = tinycats.data.load(config, splits=('test',))
  assert len(data.classes) == 37 and data.classes[0] == 'Abyssinian'
  assert sorted(set(data.splits['test'].labels.tolist())) == list(range(37))


def test_itstime_is_every_n_steps_and_the_last():
  assert [s for s in range(1, 11) if loop.itstime(s, 4, 10)] == [4, 8, 10]
  assert [s for s in range(1, 4) if loop.itstime(s, 0, 3)] == [3]  # 0: only at the end.


def test_metric_writer_starts_fresh_or_drops_the_rows_after_the_resumed_step(tmp_path):
  path = str(tmp_path / 'metrics.jsonl')
  writer = writers.MetricWriter(path)
  for step in (10, 20, 30):
    writer.write(step, {'train_loss': 1.0 / step})
  assert [r['step'] for r in writers.read_jsonl(path)] == [10, 20, 30]
  resumed = writers.MetricWriter(path, resume_step=20)  # Step 30 will be logged again.
  assert [r['step'] for r in resumed.rows()] == [10, 20]
  writers.MetricWriter(path)
  assert writers.read_jsonl(path) == []
