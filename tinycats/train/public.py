"""What the layers above train/ may use of a run's task; train/tasks is private to train/ (`tests/test_layers.py`).

The task names, the network inference uses (restored from a workdir's checkpoint, or abstract for an export's
weights to fill), the report of a split that eval.json holds (the one the loop writes after training and
`tinycats evaluate` writes), and the task itself for `tinycats bench`, which times what the loop builds.
"""

from __future__ import annotations

from flax import nnx

from tinycats.train import state as state_lib, tasks
from tinycats.train.tasks.base import Task

TASK_NAMES = tuple(tasks.TASKS)


def task(config) -> Task:
  """The task `config.task` names, for the run's recorded classes."""
  return tasks.get(config)


def abstract_network(config):
  """(graphdef, abstract state) of the network inference uses (the classifier; the generator's EMA DiT)."""
  run_task = tasks.get(config)
  return run_task.network(*nnx.split(nnx.eval_shape(lambda: run_task.create_model(config.seed))))


def restore_network(workdir: str, config, step: int | None = None):
  """(graphdef, state, step) of the network inference uses, from the workdir's best checkpoint (or `step`)."""
  run_task = tasks.get(config)
  graphdef, model_state, step = state_lib.restore_model(workdir, run_task, step)
  return (*run_task.network(graphdef, model_state), step)


def evaluate(config, graphdef, state, split, mesh, *, name: str, step: int, workdir: str, chosen: bool = False) -> dict:
  """The task's full evaluation of a split by the inference network (`graphdef`, `state`): the report, with
  where it came from, and its figures written into `workdir` (`chosen`: a checkpoint asked for by number)."""
  return tasks.get(config).evaluate(graphdef, state, split, mesh, name=name, step=step, workdir=workdir, chosen=chosen)
