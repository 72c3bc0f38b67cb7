"""The tasks the training loop knows, by `config.task`."""
from tinycats.train.classify import ClassifyTask
from tinycats.train.generate import FlowTask

TASKS = {'classify': ClassifyTask, 'flow': FlowTask}
