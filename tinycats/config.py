"""Configs as data: load `path.py[:arg]`, apply `--config.a.b=value` overrides, validate.

Configs are `ml_collections.ConfigDict`s built by a `get_config(arg=None)` function. The
resolved config is written to `WORKDIR/config.json` (`stored_config.py`), which is the truth for
evaluate, predict and export.
"""

from __future__ import annotations

import ast
import difflib
import importlib.util
import math
import os
import sys
from collections.abc import Iterable
from typing import Any

import ml_collections

from tinycats.errors import UserError


class ConfigError(UserError):
  """A config file, field or value that cannot be used; the message says the way out."""


# The folder holding `tinycats/`, `configs/` and `launch/` when tinycats is installed from a checkout (pip -e).
CHECKOUT = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))


_TYPE_NAMES = {int: 'an integer', float: 'a number', bool: 'true or false', str: 'a string', tuple: 'a list'}


def load_config_file(spec: str) -> ml_collections.ConfigDict:
  """Loads `configs/cats.py` or `configs/cats.py:smoke` (the part after ':' is `arg`)."""
  path, _, arg = spec.partition(':')
  if not os.path.isfile(path) and not os.path.isabs(path) and os.path.isfile(os.path.join(CHECKOUT, path)):
    path = os.path.join(CHECKOUT, path)  # `configs/cats.py` from any folder, with tinycats installed from a checkout.
  if not os.path.isfile(path):
    raise ConfigError(
      f'config file {path!r} not found in {os.getcwd()} nor in the tinycats checkout {CHECKOUT} (expected e.g. '
      'configs/cats.py or configs/cats.py:smoke, relative to either, or a path to your own config file)'
    )
  module_spec = importlib.util.spec_from_file_location(f'_tinycats_config_{abs(hash(path))}', path)
  module = importlib.util.module_from_spec(module_spec)
  sys.path.insert(0, os.path.dirname(os.path.abspath(path)))  # So configs can import their shared parts.
  try:
    module_spec.loader.exec_module(module)
  finally:
    sys.path.pop(0)
  if not hasattr(module, 'get_config'):
    raise ConfigError(f'config file {path!r} defines no get_config(arg=None)')
  try:
    config = module.get_config(arg or None)
  except ValueError as e:  # A config refuses an argument it does not know; its message names those it knows.
    if not arg:
      raise
    raise ConfigError(str(e) if os.path.basename(path) in str(e) else f'{path}:{arg}: {e}') from None
  config.lock()  # A misspelt field set in Python fails there (as with ml_collections' config_flags), not silently.
  return config


def leaves(config, prefix=''):
  """{'train.batch_size': 128, ...}: every leaf field by its dotted name (sequences as lists, as in JSON)."""
  out = {}
  for key, value in config.items():
    if isinstance(value, (dict, ml_collections.ConfigDict)):
      out.update(leaves(value, f'{prefix}{key}.'))
    else:
      out[f'{prefix}{key}'] = list(value) if isinstance(value, (tuple, list)) else value
  return out


def _literal(text: str) -> Any:
  """`ast.literal_eval`, whose own errors name AST nodes ('<ast.Name object at 0x...>') rather than the text."""
  try:
    return ast.literal_eval(text)
  except (ValueError, SyntaxError, TypeError, MemoryError, RecursionError):
    raise ValueError("not a Python literal; quote text, e.g. \"('cat', 'other')\" or \"'cat'\"") from None


def _parse_value(field: str, text: str, current: Any) -> Any:
  """Parses `text` as the type of the field's current value."""
  try:
    if isinstance(current, bool):
      lowered = text.lower()
      if lowered in ('1', 'true', 'yes', 'on'):
        return True
      if lowered in ('0', 'false', 'no', 'off'):
        return False
      raise ValueError('expected true or false')
    if isinstance(current, int):
      return int(text)
    if isinstance(current, float):
      return float(text)
    if isinstance(current, str):
      return text
    if isinstance(current, (tuple, list)):
      value = _literal(text)
      return type(current)(value if isinstance(value, (tuple, list)) else (value,))
    return _literal(text)
  except (ValueError, SyntaxError) as e:
    raise ConfigError(
      f'bad value for config field {field!r}: {text!r} is not {_TYPE_NAMES.get(type(current), type(current).__name__)} '
      f'({e})'
    ) from None


def split_overrides(argv: Iterable[str]) -> tuple[list[str], list[str]]:
  """(overrides, the rest) of a command line: `--config.a.b=value` and `--config.a.b value` become `a.b=value`.

  The one parser of overrides on a command line (`tinycats train`, `python -m launch.modal_train`).
  """
  argv, overrides, rest = list(argv), [], []
  while argv:
    item = argv.pop(0)
    if not item.startswith('--config.'):
      rest.append(item)
    elif '=' in item or not argv or argv[0].startswith('--'):
      overrides.append(item.removeprefix('--config.'))
    else:
      overrides.append(f'{item.removeprefix("--config.")}={argv.pop(0)}')
  return overrides, rest


def parse_override(item: str) -> tuple[str, str]:
  """('a.b', 'value') from `a.b=value` or `--config.a.b=value`."""
  field, sep, value = item.removeprefix('--').removeprefix('config.').partition('=')
  if not sep or not field:
    raise ConfigError(f'config override {item!r} must look like --config.train.batch_size=64')
  return field, value


def _abbreviated(field: str, known: Iterable[str]) -> list[str]:
  """The one known field that `field` abbreviates by its words' initials (train.lr -> train.learning_rate)."""
  group, _, name = field.rpartition('.')
  if len(name) < 2:
    return []
  initials = lambda known_name: ''.join(word[0] for word in known_name.split('_'))
  matches = [k for k in known if k.rpartition('.')[0] == group and initials(k.rpartition('.')[2]) == name]
  return matches if len(matches) == 1 else []


# Fields renamed for one vocabulary (issue 27): an override with the old name names the new one.
RENAMED_FIELDS = {'sample.cfg': 'sample.guidance'}


def apply_overrides(config: ml_collections.ConfigDict, overrides: Iterable[str]) -> ml_collections.ConfigDict:
  """Applies `a.b=value` (or `--config.a.b=value`) strings; unknown fields are named with a suggestion."""
  config = ml_collections.ConfigDict(config.to_dict())  # A copy: the caller's config is untouched.
  config.lock()
  known = list(leaves(config))
  for item in overrides:
    field, value = parse_override(item)
    if field not in known:
      if field in RENAMED_FIELDS:
        raise ConfigError(f'config field {field!r} is now {RENAMED_FIELDS[field]!r}')
      if any(name.startswith(field + '.') for name in known):
        raise ConfigError(f'config field {field!r} is a group; set one of its fields, e.g. --config.{field}.<name>=...')
      close = _abbreviated(field, known) or difflib.get_close_matches(field, known, n=1)
      hint = f"; did you mean '{close[0]}'?" if close else '; see the config file for the fields'
      raise ConfigError(f'unknown config field {field!r}{hint}')
    *parents, leaf = field.split('.')
    node = config
    for p in parents:
      node = node[p]
    node[leaf] = _parse_value(field, value, node[leaf])
  return config


_MODELS = {'classifier': ('resnet18', 'resnet34'), 'generator': ('dit',)}
_CHOICES = {
  'task': tuple(_MODELS),
  'model.name': sum(_MODELS.values(), ()),
  'model.dtype': ('auto', 'bfloat16', 'float32'),
  'data.source': ('tfds', 'folder'),
  'data.labels': ('species', 'breed', 'cat_breeds'),
  'data.normalization': ('imagenet', 'none', 'symmetric'),
  'flow.timesteps': ('uniform', 'logit_normal'),
  'flow.prediction': ('v', 'x'),
  'model.norm': ('layernorm', 'rmsnorm'),
  'model.mlp': ('gelu', 'swiglu'),
  'sample.sampler': ('euler', 'heun'),
  'train.optimizer': ('adamw',),
}
_POSITIVE = (
  'model.width',
  'model.patch_size',
  'model.depth',
  'model.heads',
  'model.mlp_ratio',
  'data.image_size',
  'data.cache_size',
  'train.batch_size',
  'train.eval_batch_size',
  'train.grad_accum',
  'train.epochs',
  'train.learning_rate',
  'train.log_every',
  'train.keep_checkpoints',
  'sample.steps',
  'sample.per_class',
  'flow.logit_std',
)
_FRACTIONS = (
  'model.dropout',
  'data.val_fraction',
  'data.test_fraction',
  'data.crop_min_scale',
  'data.color_jitter',
  'data.recolor',
  'train.label_smoothing',
  'flow.label_dropout',
  'flow.t_eps',
  'train.beta2',
  'ema.decay',
)
_NON_NEGATIVE = (
  'train.steps',
  'data.max_examples',
  'data.val_min_per_class',
  'data.device_cache_gb',
  'train.warmup_epochs',
  'train.weight_decay',
  'train.grad_clip',
  'train.eval_every',
  'train.patience',
  'train.backbone_lr_scale',
  'train.freeze_epochs',
  'model.bottleneck',
  'model.class_tokens',
  'model.class_token_block',
)


def validate(config: ml_collections.ConfigDict) -> ml_collections.ConfigDict:
  """Checks values that the type check cannot; every error names the field and the allowed values."""
  values = leaves(config)
  for field, value in values.items():
    if isinstance(value, float) and not math.isfinite(value):
      raise ConfigError(f'config field {field!r} must be a finite number, got {value!r}')
  for field, allowed in _CHOICES.items():
    value = values.get(field)
    if value is not None and value not in allowed:
      raise ConfigError(f'config field {field!r} is {value!r}; allowed: {", ".join(allowed)}')
  for field in _POSITIVE:
    value = values.get(field)
    if value is not None and not value > 0:
      raise ConfigError(f'config field {field!r} must be > 0, got {value!r}')
  for field in _NON_NEGATIVE:
    value = values.get(field)
    if value is not None and value < 0:
      raise ConfigError(f'config field {field!r} must be >= 0, got {value!r}')
  for field in _FRACTIONS:
    value = values.get(field)
    if value is not None and not 0 <= value < 1:
      raise ConfigError(f'config field {field!r} must be in [0, 1), got {value!r}')
  if config.model.name not in _MODELS[config.task]:
    raise ConfigError(
      f'model.name {config.model.name!r} does not fit task {config.task!r}; '
      f'it takes {", ".join(_MODELS[config.task])} (configs/cats.py classifies, configs/dit.py generates)'
    )
  if config.task == 'generator':
    _check_dit(config)
  elif config.data.image_size < 32:
    raise ConfigError(
      f"data.image_size ({config.data.image_size}) is below 32, the ResNet's total stride: its last stage would "
      'see less than one pixel. Use 32 or more (the smoke recipes use 64 and more)'
    )
  if config.train.batch_size % config.train.get('grad_accum', 1):
    raise ConfigError(
      f'train.batch_size ({config.train.batch_size}) must be a multiple of train.grad_accum '
      f'({config.train.grad_accum}): each micro-batch is an equal share'
    )
  if config.data.source == 'folder' and not config.data.folder:
    raise ConfigError("data.source is 'folder' but data.folder is empty; pass --config.data.folder=PATH")
  if config.model.get('pretrained') and config.data.normalization != 'imagenet':
    raise ConfigError(
      'model.pretrained weights were trained on ImageNet-normalised inputs; keep '
      "data.normalization='imagenet' or train from scratch with --config.model.pretrained=''"
    )
  interval = values.get('sample.guidance_interval')
  if interval is not None and not _is_interval(interval):
    raise ConfigError(
      f"config field 'sample.guidance_interval' is {interval!r}; it must be a pair 0 <= lo <= hi <= 1 of "
      'times (0 noise, 1 data), e.g. --config.sample.guidance_interval=0.1,1.0, or 0.0,1.0 to guide every step'
    )
  eval_crop = values.get('data.eval_crop')
  if eval_crop is not None and not 0 < eval_crop <= 1:
    raise ConfigError(
      f"config field 'data.eval_crop' must be in (0, 1], got {eval_crop!r}: it is the fraction of "
      "the shorter side whose central square evaluation keeps (0.875 = torchvision's 224/256)"
    )
  if config.data.image_size > config.data.cache_size:
    raise ConfigError(
      f'data.image_size ({config.data.image_size}) must not exceed data.cache_size '
      f'({config.data.cache_size}): the network input is cropped from the cached image'
    )
  return config


def _is_interval(value) -> bool:
  """A pair of numbers with 0 <= lo <= hi <= 1 (`sample.guidance_interval`)."""
  numbers = isinstance(value, (tuple, list)) and all(isinstance(v, (int, float)) for v in value)
  return numbers and len(value) == 2 and 0 <= value[0] <= value[1] <= 1


def _check_dit(config) -> None:
  m, size = config.model, config.data.image_size
  if m.get('class_tokens') and m.class_token_block >= m.depth:
    raise ConfigError(
      f'model.class_token_block ({m.class_token_block}) must name a block: 0 to model.depth - 1 ({m.depth - 1})'
    )
  if m.get('rope') and (m.width // m.heads) % 4:
    raise ConfigError(
      f'model.rope needs a head width (model.width / model.heads = {m.width // m.heads}) divisible by 4'
    )
  if size % m.patch_size:
    raise ConfigError(f'data.image_size ({size}) must be a multiple of model.patch_size ({m.patch_size})')
  if not 0 <= 2 * m.get('overlap', 0) <= m.patch_size:
    raise ConfigError(
      f'model.overlap ({m.overlap}) must be 0 to half of model.patch_size ({m.patch_size}): '
      f'--config.model.overlap={m.patch_size // 4} (a quarter of the patch, as the recipes have) or 0'
    )
  if m.width % m.heads or m.width % 4:
    raise ConfigError(
      f'model.width ({m.width}) must be a multiple of model.heads ({m.heads}) and of 4 (the 2-D position embedding)'
    )


def load(spec: str, overrides: Iterable[str] = ()) -> ml_collections.ConfigDict:
  """The one way commands get a config: file, then overrides, then validation."""
  return validate(apply_overrides(load_config_file(spec), overrides))
