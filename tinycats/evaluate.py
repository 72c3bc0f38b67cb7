"""`tinycats evaluate`: a workdir's best checkpoint on a split -> eval.json (and a plot).

A classifier gets accuracy, balanced accuracy, per-class scores and confusion.png, and a warning
when its model answers one class for every image. A generator gets its
flow-matching loss on the split and, given a trained classifier, the quality of its samples
(`sample_quality`) plus the grid of those samples (samples/eval.png).
"""
from __future__ import annotations

import os
import sys

import numpy as np

import tinycats.data
from tinycats import config as config_lib, metrics
from tinycats.data import augment
from tinycats.errors import UserError
from tinycats.train import state as state_lib, step as step_lib
from tinycats.train.tasks import TASKS


def evaluate(workdir: str, split: str = 'test', config=None, data=None, mesh=None, classifier: str | None = None,
             samples_per_class: int = 16, seed: int = 0) -> dict:
  """Writes and returns `WORKDIR/eval.json`. `classifier` (a classifier workdir) is for generators only."""
  if split not in tinycats.data.SPLITS:
    raise UserError(f'unknown split {split!r}; choose one of {", ".join(tinycats.data.SPLITS)}')
  config = config or config_lib.load_json(os.path.join(workdir, 'config.json'))
  if classifier and config.task != 'flow':
    raise UserError('--classifier judges generated images; this workdir holds a classifier')
  if data is None or split not in data.splits:
    data = tinycats.data.load(config, splits=(split,))
  if list(config.data.classes) != list(data.classes):
    raise UserError(f'the data now has classes {data.classes}, but {workdir} was trained on '
                     f'{list(config.data.classes)}; evaluate on the data it was trained on')
  mesh = mesh or step_lib.make_mesh()
  task = TASKS[config.task](config, data.classes)
  graphdef, model_state, step = state_lib.load_for_inference(workdir, config, task)
  report = task.report(graphdef, model_state, data.splits[split], mesh)
  report.update(split=split, step=step, skipped_images=len(data.splits[split].skipped))
  if config.task == 'classify':
    metrics.plot_confusion(report['confusion_matrix'], report['classes'], os.path.join(workdir, 'confusion.png'),
                           title=f'{split}: accuracy {report["accuracy"]:.4f} (step {step})')
  elif classifier:
    from tinycats.generator import Generator  # pylint: disable=import-outside-toplevel
    from tinycats.train.generate import ema_network  # pylint: disable=import-outside-toplevel
    generator = Generator(config, *ema_network(graphdef, model_state), step)  # The checkpoint read above.
    report['samples'] = _judge_samples(workdir, generator, data.splits[split], classifier, samples_per_class, seed)
  metrics.write_json(report, os.path.join(workdir, 'eval.json'))
  if report.get('degenerate') and metrics.writes_files():
    print(f'warning: the checkpoint at step {step} of {workdir} {report["degenerate"]} of the {split} split',
          file=sys.stderr)
  return report


def _judge_samples(workdir, generator, split, classifier_dir: str, per_class: int, seed: int) -> dict:
  """Samples `per_class` images of every class (seeded) and scores them against the split's real images."""
  from tinycats.classifier import Classifier
  from tinycats.sample_quality import sample_quality
  judge = Classifier.load(classifier_dir)
  config = generator.config
  grid = generator.sample_grid(per_label=per_class, seed=seed)
  classes = generator.classes
  labels = np.repeat(np.arange(len(classes)), per_class)
  real = _as_generator_data(config, split)
  out = sample_quality(judge, real, split.labels, grid.reshape((-1,) + grid.shape[2:]), labels, classes)
  s = config.sample
  out.update(classifier=os.path.abspath(classifier_dir), per_class=per_class, seed=seed, sampler=s.sampler,
             steps=s.steps, cfg=s.cfg)
  metrics.save_grid(grid, os.path.join(workdir, 'samples', 'eval.png'), classes)
  return out


def _as_generator_data(config, split, batch: int = 256) -> np.ndarray:
  """The split's real images as the generator learnt them (its transform, unflipped), as uint8 pixels."""
  d = config.data
  return np.concatenate([
      augment.to_uint8(augment.flip_transform(split.images[i:i + batch], split.sizes[i:i + batch], None,
                                              image_size=d.image_size, crop_fraction=augment.eval_crop(d),
                                              flip=False, norm=d.normalization), d.normalization)
      for i in range(0, len(split), batch)])
