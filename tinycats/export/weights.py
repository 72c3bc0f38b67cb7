"""Trained weights as files: flat-key safetensors (NNX layout), torchvision's layout, and loading them back.

`model.safetensors` holds the whole inference state of the exported network (parameters,
BatchNorm statistics, the DiT's fixed position table) under keys joined from its NNX path,
e.g. `layer2.0.downsample.0.kernel` or `blocks.3.attn.qkv.kernel`, in NNX's layouts (conv
kernels HWIO, linear (in, out)). Next to `config.json` it is a complete model:
`Classifier.load(folder)` / `Generator.load(folder)` rebuild it (`load_export`), and a Hub repo
id is fetched into huggingface_hub's cache first (`resolve`).
"""
from __future__ import annotations

import json
import os

import numpy as np
from flax import nnx, traverse_util

from tinycats.errors import UserError

WEIGHTS = 'model.safetensors'
TORCHVISION_WEIGHTS = 'model_torchvision.safetensors'
CONFIG = 'config.json'


class ExportError(UserError):
  """An export cannot be written, or a folder or repo is not a tinycats export."""


def _key(path) -> str:
  return '.'.join(str(p) for p in path)


def flat_arrays(state) -> dict[str, np.ndarray]:
  """{'a.b.0.kernel': contiguous numpy array} for an NNX state (contiguous: safetensors writes memory order)."""
  flat = traverse_util.flatten_dict(nnx.to_pure_dict(state))
  return {_key(path): np.ascontiguousarray(np.asarray(value)) for path, value in flat.items()}


def save(state, path: str, metadata: dict[str, str] | None = None) -> None:
  from safetensors.numpy import save_file
  save_file(flat_arrays(state), path, metadata=metadata)


def load_into(state, path: str):
  """Fills the (abstract) NNX `state` from a flat-key safetensors file; every key must match in name and shape."""
  from safetensors.numpy import load_file
  stored = load_file(path)
  flat = traverse_util.flatten_dict(nnx.to_pure_dict(state))
  by_key = {_key(p): p for p in flat}
  missing = sorted(set(by_key) - set(stored))
  unexpected = sorted(set(stored) - set(by_key))
  misshapen = [f'{k}: file {stored[k].shape}, model {tuple(flat[by_key[k]].shape)}'
               for k in sorted(set(by_key) & set(stored)) if stored[k].shape != tuple(flat[by_key[k]].shape)]
  if missing or unexpected or misshapen:
    raise ExportError(f'{path} does not fit the model its config.json describes: '
                      + '; '.join(f'{title}: {", ".join(keys[:8])}{" ..." if len(keys) > 8 else ""}'
                                  for title, keys in (('missing', missing), ('unexpected', unexpected),
                                                      ('wrongly shaped', misshapen)) if keys))
  import jax.numpy as jnp
  nnx.replace_by_pure_dict(state, traverse_util.unflatten_dict({p: jnp.asarray(stored[k]) for k, p in by_key.items()}))
  return state


def torchvision_state_dict(state, num_batches_tracked: int = 0) -> dict[str, np.ndarray]:
  """A ResNet's state in torchvision's key names and layouts, ready for `load_state_dict(strict=True)`.

  torchvision's BatchNorm also carries `num_batches_tracked`; it is unused in eval mode and set to
  `num_batches_tracked` (the training steps) so that strict loading finds every key.
  """
  from tinycats import pretrained
  out = {pretrained.torchvision_key(path): pretrained.to_torch(variable.get_value())
         for path, variable in nnx.to_flat_state(state)}
  for key in [k for k in out if k.endswith('.running_var')]:
    out[key.removesuffix('running_var') + 'num_batches_tracked'] = np.array(num_batches_tracked, np.int64)
  return out


def is_export(folder: str) -> bool:
  return os.path.isfile(os.path.join(folder, WEIGHTS)) and os.path.isfile(os.path.join(folder, CONFIG))


def _looks_local(source: str) -> bool:
  """A missing path whose first folder exists here is a mistyped path, not a Hub repo id."""
  first = source.split('/')[0]
  return not source.startswith('hf-hub:') and os.path.isdir(first)


def resolve(source: str, endpoint: str | None = None) -> tuple[str, str]:
  """('workdir' | 'export', local folder) for a workdir, an export folder or a Hub repo id (downloaded, cached)."""
  from tinycats import pretrained
  source = os.fspath(source)
  if os.path.isdir(source):
    return ('export' if is_export(source) and not os.path.isdir(os.path.join(source, 'checkpoints')) else 'workdir',
            source)
  if not pretrained.is_hub_id(source) or _looks_local(source):
    raise FileNotFoundError(f'{source}: no such workdir or export folder (a Hugging Face Hub repo id looks like '
                            "'user/tinycats-cats'; prefix it with hf-hub: if a local folder has the user's name)")
  import huggingface_hub
  repo = source.removeprefix('hf-hub:')
  try:  # One snapshot: config.json and the weights of the same revision, into huggingface_hub's cache.
    folder = huggingface_hub.snapshot_download(repo, allow_patterns=[CONFIG, WEIGHTS],
                                               endpoint=endpoint or os.environ.get('HF_ENDPOINT'),
                                               cache_dir=os.environ.get('HF_HUB_CACHE'))  # Read now, not at import.
  except Exception as e:  # Offline, unknown repo, private without a token: the same advice.
    raise ExportError(f'could not download {CONFIG} and {WEIGHTS} of {repo!r} from the Hugging Face Hub '
                      f'({type(e).__name__}: {e}); check the repo id, HF_ENDPOINT and HF_TOKEN for private repos, '
                      'or pass a local export folder') from e
  if not is_export(folder):
    raise ExportError(f'{repo!r} on the Hub has no {CONFIG} and {WEIGHTS}: it is not a tinycats export')
  return 'export', folder


def read_config(folder: str) -> dict:
  with open(os.path.join(folder, CONFIG)) as f:
    return json.load(f)


def load_export(folder: str, task_name: str, what: str):
  """(run config, graphdef, state, step) of the network an export folder holds (the EMA DiT for a generator)."""
  import ml_collections
  from tinycats import models
  meta = read_config(folder)
  if 'run_config' not in meta:
    raise ExportError(f'{folder}/{CONFIG} is not a tinycats export (no run_config); export one with '
                      '`tinycats export hub --workdir DIR --out-dir OUT --no-upload`')
  config = ml_collections.ConfigDict(meta['run_config'])
  if config.task != task_name:
    raise ExportError(f'{folder} holds a {config.task!r} export, not a {what}')
  classes = list(config.data.classes)
  if task_name == 'classify':
    build = lambda: models.create_classifier(config.model, len(classes))
  else:
    build = lambda: models.create_generator(config.model, len(classes), config.data.image_size)
  graphdef, state = nnx.split(nnx.eval_shape(build))
  return config, graphdef, load_into(state, os.path.join(folder, WEIGHTS)), int(meta.get('step', 0))
