"""The tasks the training loop knows, by `config.task`."""

from tinycats.train.tasks.base import Task
from tinycats.train.tasks.classifier import ClassifierTask
from tinycats.train.tasks.generator import GeneratorTask

TASKS = {'classifier': ClassifierTask, 'generator': GeneratorTask}


def get(config, classes=None) -> Task:
  """The task `config.task` names, for `classes` (default: the run's recorded `config.data.classes`)."""
  return TASKS[config.task](config, list(config.data.classes if classes is None else classes))
