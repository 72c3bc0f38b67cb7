"""A run's stored config (WORKDIR/config.json, and the run config inside an export): written once, read back with
the names and defaults of older runs mapped to today's, and compared on resume.

Old workdirs and exports must keep loading: every rename of a field or task, and every field added since a run
was written (with the behaviour that run had), is mapped here and nowhere else.
"""

from __future__ import annotations

import json
import os

import ml_collections

from tinycats import config as config_lib, writers

# Fields a resumed run may change. Everything else (seeds, data, splits, model, batch size,
# augmentation) decides which examples and which model the checkpoint belongs to.
CHANGEABLE_ON_RESUME = frozenset(
  {
    'name',
    'data.data_dir',
    'data.folder',
    'data.cache_dir',
    'data.device_cache_gb',
    'train.epochs',
    'train.steps',
    'train.patience',
    'train.log_every',
    'train.eval_every',
    'train.keep_checkpoints',
    'train.compilation_cache',
    'train.eval_batch_size',
    'train.learning_rate',
    'train.warmup_epochs',
    'train.weight_decay',
    'train.grad_clip',
    'train.backbone_lr_scale',
    'train.freeze_epochs',
    'model.pretrained',  # Weights come from the checkpoint.
    'sample.sampler',
    'sample.steps',
    'sample.guidance',
    'sample.guidance_interval',
    'sample.seed',
    'sample.per_class',  # Grids only.
    # Where it runs: the global batch and its order do not depend on the device count.
    'modal.app',
    'modal.gpu',
    'modal.nodes',
    'modal.timeout',
    'modal.retries',
    'modal.memory_gb',
    'modal.data_volume',
    'modal.outputs_volume',
  }
)


def resume_conflicts(saved: ml_collections.ConfigDict, now: ml_collections.ConfigDict) -> list[str]:
  """`field: saved -> now` for every field outside CHANGEABLE_ON_RESUME that differs."""
  old, new = config_lib.leaves(saved), config_lib.leaves(now)
  return [
    f'{k}: {old.get(k)!r} -> {new.get(k)!r}'
    for k in sorted(old.keys() | new.keys())
    if k not in CHANGEABLE_ON_RESUME and old.get(k) != new.get(k)
  ]


def save_json(run_config: ml_collections.ConfigDict, path: str) -> None:
  """Writes a run's resolved config (WORKDIR/config.json): what evaluate, predict, export and a resume read."""
  writers.write_json(run_config.to_dict(), path)


# A generator's fields that runs written before they existed lack, with the behaviour those runs had. The model's
# are `models.DiT`'s own defaults, repeated here on purpose: a stored config is read without importing the model.
GENERATOR_BEFORE = {
  'model': dict(
    norm='layernorm',
    qk_norm=False,
    mlp='gelu',
    rope=False,
    bottleneck=0,
    class_tokens=0,
    class_token_block=0,
    overlap=0,
  ),
  'flow': dict(prediction='v', t_eps=0.05),
  'train': dict(beta2=0.999),
}

# Sampling fields that generator runs written before they existed lack, with the behaviour those runs had.
_SAMPLE_BEFORE = {'guidance_interval': (0.0, 1.0)}  # Guidance at every step.

# Task names that runs written before the rename recorded in config.json.
_OLD_TASKS = {'classify': 'classifier', 'flow': 'generator'}


def from_dict(values: dict) -> ml_collections.ConfigDict:
  """A stored config (a workdir's or an export's) as a ConfigDict, older names mapped to today's."""
  config = ml_collections.ConfigDict(values)
  if config.get('task') in _OLD_TASKS:
    config.task = _OLD_TASKS[config.task]
  if config.get('task') == 'generator' and 'sample' in config:
    with config.unlocked():
      if 'cfg' in config.sample:  # Renamed for one vocabulary (issue 27).
        config.sample.guidance = config.sample.cfg
        del config.sample['cfg']
      for name, value in _SAMPLE_BEFORE.items():
        if name not in config.sample:
          config.sample[name] = value
  if config.get('task') == 'generator':  # Fields added since: their values before they existed.
    with config.unlocked():
      for section, defaults in GENERATOR_BEFORE.items():
        for name, value in defaults.items():
          if name not in config[section]:
            config[section][name] = value
  config.lock()
  return config


def load_json(path: str) -> ml_collections.ConfigDict:
  """A workdir's config.json (`from_dict`); a missing one says how a workdir is made."""
  if not os.path.isfile(path):
    raise config_lib.ConfigError(
      f'{path} not found: is this a tinycats workdir? Train one with '
      '`tinycats train --config configs/cats.py --workdir DIR`'
    )
  with open(path) as f:
    return from_dict(json.load(f))
