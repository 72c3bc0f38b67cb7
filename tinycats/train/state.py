"""Building, checkpointing and restoring the (model, optimizer) pair a config describes."""
from __future__ import annotations

import os

from flax import nnx

from tinycats import checkpoint
from tinycats.errors import UserError
from tinycats.train import step as step_lib


def create(task, config, steps_per_epoch: int, total_steps: int):
  """(model, optimizer, schedule) for `task`, with fresh weights seeded by `config.seed`."""
  schedule = step_lib.learning_rate_schedule(config.train, steps_per_epoch, total_steps)
  model = task.create_model(config.seed)
  tx = step_lib.make_optimizer(config.train, schedule, steps_per_epoch, fine_tuning=bool(config.model.get('pretrained')))
  optimizer = nnx.Optimizer(model, tx, wrt=task.trainable)
  return model, optimizer, schedule


def to_checkpoint(state) -> dict:
  """The split (model, optimizer) state as the plain dicts of arrays that Orbax stores."""
  return {'model': nnx.to_pure_dict(state[0]), 'optimizer': nnx.to_pure_dict(state[1])}


def from_checkpoint(state, stored: dict):
  nnx.replace_by_pure_dict(state[0], stored['model'])
  nnx.replace_by_pure_dict(state[1], stored['optimizer'])
  return state


def checkpoints(workdir: str, task, keep: int = 2, read_only: bool = False) -> checkpoint.Checkpoints:
  return checkpoint.Checkpoints(os.path.join(workdir, 'checkpoints'), keep=keep, best_metric=task.best_metric,
                                best_mode=task.best_mode, read_only=read_only)


def load_run(workdir: str, task_name: str, what: str, step: int | None = None):
  """(config, graphdef, model_state, step) of a workdir's best checkpoint (or `step`), if it holds a `task_name` run."""
  from tinycats import config as config_lib  # pylint: disable=import-outside-toplevel
  from tinycats.train.tasks import TASKS  # The tasks import this module.
  config = config_lib.load_json(os.path.join(workdir, 'config.json'))
  if config.task != task_name:
    raise UserError(f'{workdir} holds a {config.task!r} run, not a {what}')
  task = TASKS[config.task](config, list(config.data.classes))
  return (config, *load_for_inference(workdir, config, task, step))


def load_for_inference(workdir: str, config, task, step: int | None = None):
  """(graphdef, model_state, step) of the best checkpoint (or `step`); the optimizer is not read."""
  ckpts = checkpoints(workdir, task, read_only=True)
  step = step if step is not None else ckpts.best_step()
  if step is None:
    raise FileNotFoundError(f'no checkpoint in {ckpts.directory}; train first, or check --workdir')
  graphdef, model_state = nnx.split(nnx.eval_shape(lambda: task.create_model(config.seed)))
  stored, _ = ckpts.restore(step, {'model': nnx.to_pure_dict(model_state)})
  ckpts.close()
  nnx.replace_by_pure_dict(model_state, stored['model'])
  return graphdef, model_state, step
