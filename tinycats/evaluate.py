"""`tinycats evaluate`: a workdir's best checkpoint on a split -> eval.json (and a plot); eval_val.json for val;
another checkpoint by `step` -> eval_stepN.json (the best's files stay).

A classifier gets accuracy, balanced accuracy, per-class scores and confusion.png, and a warning
when its model answers one class for every image. A generator gets its flow-matching loss on the split and,
given a trained classifier, its samples judged by it (`evaluators.samples`) plus the grid of those samples
(samples/eval.png; named as the report is: eval_val.png for val). The numbers come from the evaluators the
training run used (`train.public.evaluate`: the run's task and `tinycats.evaluators`).
"""

from __future__ import annotations

import os

import numpy as np

import tinycats.data
from tinycats import files, inference, plots, sharding, stored_config, writers
from tinycats.classifier import Classifier
from tinycats.errors import UserError
from tinycats.evaluators import samples
from tinycats.generator import Generator
from tinycats.train import public as train_public


def evaluate(
  workdir: str,
  split: str = 'test',
  classifier: str | None = None,
  samples_per_class: int = 16,
  seed: int = 0,
  mesh=None,
  *,
  guidance: float | None = None,
  steps: int | None = None,
  sampler: str | None = None,
  guidance_interval: tuple[float, float] | None = None,
  data_dir: str | None = None,
  step: int | None = None,
) -> dict:
  """Writes and returns `WORKDIR/eval.json`. `classifier` (a classifier workdir) is for generators only; so are
  `guidance`, `steps`, `sampler` and `guidance_interval`, which the judged samples use instead of the run's
  `sample.*`. `data_dir`: where the run's data is on this machine, when not where config.json says (a TFDS data
  dir, or the image folder of a folder run). `step`: that checkpoint instead of the best, reported in its own files
  (`eval_stepN.json`, `samples/eval_stepN.png`), so the best's stay as they are."""
  if split not in tinycats.data.SPLITS:
    raise UserError(f'unknown split {split!r}; choose one of {", ".join(tinycats.data.SPLITS)}')
  if not os.path.isdir(workdir):
    raise inference.no_such_run(workdir)
  config = stored_config.load_json(os.path.join(workdir, 'config.json'))  # Before the data: a bad workdir fails first.
  files.refuse_links(workdir, ['samples'])  # The folder the judged samples' grid is written into.
  if classifier and config.task != 'generator':
    raise UserError('--classifier judges generated images; this workdir holds a classifier')
  if data_dir:
    config = tinycats.data.relocated(config, data_dir)
  try:
    data = tinycats.data.load(config, splits=(split,))
  except (UserError, FileNotFoundError) as e:
    if data_dir:
      raise
    raise UserError(
      f'{e}\n{workdir} was trained on data at {tinycats.data.location(config)}; if it is elsewhere on this '
      'machine (a run trained on Modal), pass --data-dir DIR'
    ) from None
  if list(config.data.classes) != list(data.classes):
    raise UserError(
      f'the data now has classes {data.classes}, but {workdir} was trained on '
      f'{list(config.data.classes)}; evaluate on the data it was trained on'
    )
  tinycats.data.check_record(data, workdir, [split])  # Exactly the run's pictures, never a new draw.
  chosen = step is not None
  config, graphdef, state, step = inference.load(workdir, step=step)
  report = train_public.evaluate(
    config,
    graphdef,
    state,
    data.splits[split],
    mesh or sharding.make_mesh(),
    name=split,
    step=step,
    workdir=workdir,
    chosen=chosen,
  )
  if classifier:
    generator = Generator(config, graphdef, state, step)  # The checkpoint read above.
    sampling = dict(guidance=guidance, steps=steps, sampler=sampler, guidance_interval=guidance_interval)
    grid_name = writers.report_file(split, 'eval', 'png', step if chosen else None)  # Named as the report is.
    report['samples'] = _judge_samples(
      workdir, generator, data.splits[split], classifier, samples_per_class, seed, sampling, grid_name
    )
  writers.write_report(report, workdir)
  return report


def _judge_samples(
  workdir, generator, split, classifier_dir: str, per_class: int, seed: int, sampling: dict, grid_name: str
) -> dict:
  """Samples `per_class` images of every class (seeded; `sampling`'s guidance, steps, sampler and guidance_interval
  where not None, else the run's `sample.*`) and scores them against the split's real images."""
  judge = Classifier.load(classifier_dir)
  config = generator.config
  grid = generator.sample_grid(per_label=per_class, seed=seed, **sampling)
  classes = generator.classes
  labels = np.repeat(np.arange(len(classes)), per_class)
  real = samples.real_images(config, split)
  images = grid.reshape((-1,) + grid.shape[2:])
  out = samples.judge_samples(judge, real, split.labels, images, labels, classes, config.model.patch_size)
  s = config.sample
  out.update(
    classifier=os.path.abspath(classifier_dir),
    per_class=per_class,
    seed=seed,
    sampler=sampling['sampler'] or s.sampler,
    steps=sampling['steps'] or s.steps,
    guidance=s.guidance if sampling['guidance'] is None else sampling['guidance'],
    guidance_interval=[float(v) for v in sampling['guidance_interval'] or s.get('guidance_interval', (0.0, 1.0))],
  )
  plots.save_grid(grid, os.path.join(workdir, 'samples', grid_name), classes)
  return out
