"""The one way to load a trained network: `load(source)` for a workdir, an export folder or a Hub repo id.

It returns the run's config and the network inference uses (the classifier; the generator's EMA
DiT), whoever asks: `Classifier`, `Generator`, `evaluate` and the exports. A workdir gives its
best checkpoint (or `step`); an export folder is `config.json` (the run's config under
`run_config`) beside `model.safetensors` (the network's state under flat NNX-path keys, e.g.
`layer2.0.downsample.0.kernel`); a Hub repo id is downloaded into huggingface_hub's cache first.
"""

from __future__ import annotations

import json
import os
from typing import Any, NamedTuple

import huggingface_hub
import jax.numpy as jnp
from flax import nnx, traverse_util
from safetensors.numpy import load_file

from tinycats import pretrained, stored_config
from tinycats.errors import UserError
from tinycats.train import public as train_public

WEIGHTS = 'model.safetensors'
CONFIG = 'config.json'


class ExportError(UserError):
  """An export cannot be written, or a folder or repo is not a tinycats export."""


class Trained(NamedTuple):
  """A loaded network: the run's config, the network split into (graphdef, state), and its training step."""

  config: Any
  graphdef: Any
  state: Any
  step: int


def flat_key(path) -> str:
  return '.'.join(str(p) for p in path)


def load_into(state, path: str):
  """Fills the (abstract) NNX `state` from a flat-key safetensors file; every key must match in name and shape."""
  stored = load_file(path)
  flat = traverse_util.flatten_dict(nnx.to_pure_dict(state))
  by_key = {flat_key(p): p for p in flat}
  missing = sorted(set(by_key) - set(stored))
  unexpected = sorted(set(stored) - set(by_key))
  misshapen = [
    f'{k}: file {stored[k].shape}, model {tuple(flat[by_key[k]].shape)}'
    for k in sorted(set(by_key) & set(stored))
    if stored[k].shape != tuple(flat[by_key[k]].shape)
  ]
  if missing or unexpected or misshapen:
    raise ExportError(
      f'{path} does not fit the model its config.json describes: '
      + '; '.join(
        f'{title}: {", ".join(keys[:8])}{" ..." if len(keys) > 8 else ""}'
        for title, keys in (('missing', missing), ('unexpected', unexpected), ('wrongly shaped', misshapen))
        if keys
      )
    )
  nnx.replace_by_pure_dict(state, traverse_util.unflatten_dict({p: jnp.asarray(stored[k]) for k, p in by_key.items()}))
  return state


def is_export(folder: str) -> bool:
  return os.path.isfile(os.path.join(folder, WEIGHTS)) and os.path.isfile(os.path.join(folder, CONFIG))


LOCAL_FIRST_FOLDERS = ('runs',)  # Where tinycats puts workdirs by default (`launch.modal_train`, docs/modal.md).


def _looks_local(source: str) -> bool:
  """A missing path whose first folder exists here, or is `runs`, is a mistyped or not yet fetched path, not a
  Hub repo id (`hf-hub:` forces the Hub)."""
  first = source.split('/')[0]
  return not source.startswith('hf-hub:') and (os.path.isdir(first) or first in LOCAL_FIRST_FOLDERS)


def resolve(source: str, endpoint: str | None = None) -> tuple[str, str]:
  """('workdir' | 'export', local folder) for a workdir, an export folder or a Hub repo id (downloaded, cached)."""
  source = os.fspath(source)
  if os.path.isdir(source):
    return (
      'export' if is_export(source) and not os.path.isdir(os.path.join(source, 'checkpoints')) else 'workdir',
      source,
    )
  if not pretrained.is_hub_id(source) or _looks_local(source):
    raise no_such_run(source)
  repo = source.removeprefix('hf-hub:')
  try:  # One snapshot: config.json and the weights of the same revision, into huggingface_hub's cache.
    folder = huggingface_hub.snapshot_download(
      repo,
      allow_patterns=[CONFIG, WEIGHTS],
      endpoint=endpoint or os.environ.get('HF_ENDPOINT'),
      cache_dir=os.environ.get('HF_HUB_CACHE'),
    )  # Read now, not at import.
  except Exception as e:  # Offline, unknown repo, private without a token: the same advice.
    reason = ' '.join(str(e).split())  # The Hub client's messages span lines; ours is one.
    raise ExportError(
      f'could not download {CONFIG} and {WEIGHTS} of {repo!r} from the Hugging Face Hub '
      f'({type(e).__name__}: {reason}); check the repo id, HF_ENDPOINT and HF_TOKEN for private repos, '
      f'or pass a local workdir or export folder (there is no folder {repo!r} in {os.getcwd()})'
    ) from e
  if not is_export(folder):
    raise ExportError(f'{repo!r} on the Hub has no {CONFIG} and {WEIGHTS}: it is not a tinycats export')
  return 'export', folder


def no_such_run(source: str) -> FileNotFoundError:
  """The one answer of every command to a workdir or export folder that is not there."""
  hub = f'; a Hugging Face Hub repo is hf-hub:{source.removeprefix("hf-hub:")}' if pretrained.is_hub_id(source) else ''
  return FileNotFoundError(f'{source}: no such workdir or export folder in {os.getcwd()}{hub}')


def read_config(folder: str) -> dict:
  with open(os.path.join(folder, CONFIG)) as f:
    return json.load(f)


def _check_task(config, task: str | None, folder: str, what: str, error=UserError) -> None:
  if task is not None and config.task != task:
    raise error(f'{folder} holds a {config.task!r} {what}, not a {task}')


def load(source: str, task: str | None = None, step: int | None = None, *, endpoint: str | None = None) -> Trained:
  """The network of a workdir's best checkpoint (or `step`), an export folder, or a Hub repo id.

  `task` ('classifier' or 'generator'), when given, refuses a source that holds the other kind.
  """
  if task is not None and task not in train_public.TASK_NAMES:
    raise UserError(f'unknown task {task!r}; choose one of {", ".join(train_public.TASK_NAMES)}')
  kind, folder = resolve(source, endpoint)
  if kind == 'workdir':
    config = stored_config.load_json(os.path.join(folder, CONFIG))
    _check_task(config, task, folder, 'run')
    return Trained(config, *train_public.restore_network(folder, config, step))
  if step is not None:
    raise UserError(f'{source} is an export: it holds one step; drop step=')
  meta = read_config(folder)
  if 'run_config' not in meta:
    raise ExportError(
      f'{folder}/{CONFIG} is not a tinycats export (no run_config); export one with '
      '`tinycats export hub --workdir DIR --out-dir OUT --no-upload`'
    )
  config = stored_config.from_dict(meta['run_config'])
  _check_task(config, task, folder, 'export', ExportError)
  # Exports hold the inference network alone (the generator's EMA DiT): its shapes, then the file's values.
  graphdef, state = train_public.abstract_network(config)
  return Trained(config, graphdef, load_into(state, os.path.join(folder, WEIGHTS)), int(meta.get('step', 0)))
