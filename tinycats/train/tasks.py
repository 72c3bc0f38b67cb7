"""The tasks the training loop knows, by `config.task`."""
from tinycats.train.classify import ClassifyTask

TASKS = {'classify': ClassifyTask}
