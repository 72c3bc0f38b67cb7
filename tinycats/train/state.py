"""Building, checkpointing and restoring the (model, optimizer) pair a config describes."""

from __future__ import annotations

import os

from flax import nnx

from tinycats.train import checkpoint, step as step_lib


def create(task, config, steps_per_epoch: int, total_steps: int):
  """(model, optimizer, schedule) for `task`, with fresh weights seeded by `config.seed`."""
  schedule = step_lib.learning_rate_schedule(config.train, steps_per_epoch, total_steps)
  model = task.create_model(config.seed)
  tx = step_lib.make_optimizer(
    config.train, schedule, steps_per_epoch, fine_tuning=task.fine_tuning, param_groups=task.param_groups
  )
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
  return checkpoint.Checkpoints(
    os.path.join(workdir, 'checkpoints'),
    keep=keep,
    best_metric=task.best_metric,
    best_mode=task.best_mode,
    read_only=read_only,
  )


def restore_model(workdir: str, task, step: int | None = None):
  """(graphdef, model_state, step) of the trained model in the best checkpoint (or `step`); no optimizer is read.

  A damaged best checkpoint falls back to the newest intact one, with a warning; a damaged `step` asked for
  by number is an error.
  """
  ckpts = checkpoints(workdir, task, read_only=True)
  try:  # Closed on every way out, the refusals included.
    best = ckpts.best_step()
    if (step if step is not None else best) is None:
      raise FileNotFoundError(f'no checkpoint in {ckpts.directory}; train first, or check --workdir')
    graphdef, model_state = nnx.split(nnx.eval_shape(lambda: task.create_model(task.config.seed)))
    targets = {'model': nnx.to_pure_dict(model_state)}
    if step is None:
      step, stored, _ = ckpts.restore_newest_intact(targets, first=best)
    elif step not in (kept := ckpts.all_steps()):
      raise FileNotFoundError(
        f'{ckpts.directory} has no checkpoint of step {step}; it keeps steps {", ".join(map(str, kept)) or "none"}'
      )
    else:
      stored, _ = ckpts.restore(step, targets)
  finally:
    ckpts.close()
  nnx.replace_by_pure_dict(model_state, stored['model'])
  return graphdef, model_state, step
