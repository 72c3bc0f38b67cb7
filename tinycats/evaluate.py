"""`tinycats evaluate`: the best checkpoint of a workdir on a split -> eval.json and confusion.png."""
from __future__ import annotations

import os

import tinycats.data
from tinycats import config as config_lib, metrics
from tinycats.errors import UserError
from tinycats.train import state as state_lib, step as step_lib
from tinycats.train.tasks import TASKS


def evaluate(workdir: str, split: str = 'test', config=None, data=None, mesh=None) -> dict:
  """Writes `WORKDIR/eval.json` (accuracy, classes, per_class, confusion_matrix, num_examples, split)."""
  if split not in tinycats.data.SPLITS:
    raise UserError(f'unknown split {split!r}; choose one of {", ".join(tinycats.data.SPLITS)}')
  config = config or config_lib.load_json(os.path.join(workdir, 'config.json'))
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
  metrics.write_json(report, os.path.join(workdir, 'eval.json'))
  metrics.plot_confusion(report['confusion_matrix'], report['classes'], os.path.join(workdir, 'confusion.png'),
                         title=f'{split}: accuracy {report["accuracy"]:.4f} (step {step})')
  return report
