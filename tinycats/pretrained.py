"""ImageNet-pretrained weights: torchvision-layout ResNet state dicts into the NNX ResNets.

The NNX ResNet mirrors torchvision's module names, so every NNX state path maps to one
torchvision key (`('layer2', 0, 'downsample', 0, 'kernel')` -> `layer2.0.downsample.0.weight`)
and each leaf kind needs one transform (conv OIHW -> HWIO, linear (out, in) -> (in, out)).
Sources: a `.safetensors` file (numpy only, so no PyTorch at run time), a `.pth`/`.pt` state
dict (only when torch is installed), or a Hugging Face Hub model id such as
`timm/resnet18.tv_in1k` whose `model.safetensors` uses torchvision's key names.
"""

from __future__ import annotations

import os
import sys

import huggingface_hub
import jax
import jax.numpy as jnp
import numpy as np
from flax import nnx
from safetensors.numpy import load_file

from tinycats.errors import UserError

HUB_FILENAME = 'model.safetensors'
_FILE_SUFFIXES = ('.safetensors', '.pth', '.pt', '.bin', '.ckpt')
# NNX leaf name -> torchvision's; `kernel` and `scale` are both torch's `weight`.
_LEAF_NAMES = {'kernel': 'weight', 'scale': 'weight', 'bias': 'bias', 'mean': 'running_mean', 'var': 'running_var'}
_SCRATCH_HINT = (
  'or train from random weights with configs/cats.py:scratch (:smoke on a CPU), whose schedule is made for it '
  "(--config.model.pretrained='' alone keeps the fine-tuning schedule)."
)
_HOW_TO = (
  'Download the .safetensors file elsewhere (for example from https://huggingface.co/{repo}) and pass its '
  'path instead, ' + _SCRATCH_HINT
)


class PretrainedError(UserError):
  """The pretrained weights cannot be found, read, or do not fit the model."""


def resolve(model_config) -> str:
  """`model.pretrained` as a source: 'torchvision' names the torchvision ImageNet weights for the depth."""
  source = model_config.pretrained
  return f'timm/{model_config.name}.tv_in1k' if source == 'torchvision' else source


def torchvision_key(path: tuple) -> str:
  """torchvision's state-dict key for an NNX flat-state path."""
  return '.'.join([str(p) for p in path[:-1]] + [_LEAF_NAMES.get(path[-1], str(path[-1]))])


def to_nnx(array: np.ndarray) -> np.ndarray:
  """A torch tensor's layout to NNX's: conv kernels OIHW -> HWIO, linear (out, in) -> (in, out)."""
  array = np.asarray(array, dtype=np.float32)
  if array.ndim == 4:
    return array.transpose(2, 3, 1, 0)
  if array.ndim == 2:
    return array.T
  return array


def to_torch(array) -> np.ndarray:
  """The inverse of `to_nnx`: conv kernels HWIO -> OIHW, linear (in, out) -> (out, in); contiguous."""
  array = np.asarray(array, dtype=np.float32)
  if array.ndim == 4:
    array = array.transpose(3, 2, 0, 1)
  elif array.ndim == 2:
    array = array.T
  return np.ascontiguousarray(array)


def torch_shape(shape: tuple) -> tuple:
  """The inverse of `to_nnx` on shapes, so that messages speak torchvision's layout."""
  shape = tuple(shape)
  if len(shape) == 4:
    return (shape[3], shape[2], shape[0], shape[1])
  return shape[::-1] if len(shape) == 2 else shape


def is_hub_id(source: str) -> bool:
  """`owner/name` that is not an existing path and does not look like a file name."""
  source = source.removeprefix('hf-hub:')
  return (
    source.count('/') == 1
    and not os.path.exists(source)
    and not source.startswith(('.', '/', '~'))
    and not source.lower().endswith(_FILE_SUFFIXES)
  )


def fetch(source: str, *, cache_dir: str | None = None, endpoint: str | None = None) -> str:
  """A local file for `source`: the path itself, or the hub file downloaded into huggingface_hub's cache.

  Called before any training work, so that a missing file or an offline machine fails at once.
  HF_ENDPOINT and HF_HUB_CACHE are read here, not at import, so that later settings take effect.
  """
  source = os.fspath(source)
  if os.path.isfile(source):
    return source
  if not is_hub_id(source):
    raise PretrainedError(
      f'pretrained weights {source!r}: no such file. '
      "Pass a .safetensors/.pth file, a Hugging Face Hub id such as 'timm/resnet18.tv_in1k', " + _SCRATCH_HINT
    )
  repo = source.removeprefix('hf-hub:')
  try:
    return huggingface_hub.hf_hub_download(
      repo,
      HUB_FILENAME,
      cache_dir=cache_dir or os.environ.get('HF_HUB_CACHE'),
      endpoint=endpoint or os.environ.get('HF_ENDPOINT'),
    )
  except Exception as e:  # Offline, unknown repo, missing file, HTTP errors: all need the same advice.
    raise PretrainedError(
      f'could not download {HUB_FILENAME} of {repo!r} from the Hugging Face Hub '
      f'({type(e).__name__}: {e}). ' + _HOW_TO.format(repo=repo)
    ) from e


def read_state_dict(path: str) -> dict[str, np.ndarray]:
  """A torchvision state dict as numpy arrays, from a .safetensors file or (with torch) a .pth/.pt file."""
  if path.endswith('.safetensors'):
    return load_file(path)
  try:
    import torch
  except ImportError as e:
    raise PretrainedError(
      f'{path}: reading a PyTorch checkpoint needs torch (pip install torch), or convert it '
      'to safetensors once elsewhere (safetensors.torch.save_file(state_dict, ...)).'
    ) from e
  state = torch.load(path, map_location='cpu', weights_only=True)
  for nested in ('state_dict', 'model'):
    if isinstance(state, dict) and isinstance(state.get(nested), dict):
      state = state[nested]
  if not isinstance(state, dict):
    raise PretrainedError(f'{path}: expected a state dict, found {type(state).__name__}')
  return {k: v.detach().float().cpu().numpy() for k, v in state.items() if isinstance(v, torch.Tensor)}


def load_torchvision(model: nnx.Module, source: str, *, strict: bool = True) -> nnx.Module:
  """Loads torchvision-layout ResNet weights into `model` in place and returns it.

  A head of another size than the checkpoint's (e.g. 37 breeds vs ImageNet's 1000) keeps its
  fresh initialisation, and a line on stderr says so. Otherwise, with `strict`, any missing,
  unexpected or misshapen key raises PretrainedError naming them all; without it they are
  skipped and reported on stderr.
  """
  checkpoint = {k: v for k, v in read_state_dict(fetch(source)).items() if not k.endswith('num_batches_tracked')}
  targets = {torchvision_key(path): (path, variable) for path, variable in nnx.to_flat_state(nnx.state(model))}

  skip = set()
  head, ckpt_head = targets.get('fc.weight'), checkpoint.get('fc.weight')
  if head is not None and ckpt_head is not None:
    model_classes, ckpt_classes = head[1].shape[-1], ckpt_head.shape[0]
    if model_classes != ckpt_classes and ckpt_head.ndim == 2 and ckpt_head.shape[1] == head[1].shape[0]:
      skip = {'fc.weight', 'fc.bias'}
      print(
        f'tinycats: replaced the classification head: checkpoint has {ckpt_classes} classes, model {model_classes}',
        file=sys.stderr,
      )

  usable = {k: v for k, v in checkpoint.items() if k not in skip}
  wrong = [k for k, (_, v) in targets.items() if k in usable and to_nnx(usable[k]).shape != tuple(v.shape)]
  problems = {
    'missing from the checkpoint': [
      f'{k} {torch_shape(v.shape)}' for k, (_, v) in targets.items() if k not in usable and k not in skip
    ],
    'unexpected in the checkpoint': [f'{k} {tuple(v.shape)}' for k, v in usable.items() if k not in targets],
    'wrongly shaped': [
      f'{k}: checkpoint {tuple(usable[k].shape)}, model {torch_shape(targets[k][1].shape)}' for k in wrong
    ],
  }
  if any(problems.values()):
    message = f'pretrained weights {source!r} do not fit the model:\n' + ''.join(
      f'  {title}:\n' + ''.join(f'    {line}\n' for line in lines) for title, lines in problems.items() if lines
    )
    if strict:
      raise PretrainedError(message.rstrip())
    print(f'tinycats: skipped what does not fit: {message}', file=sys.stderr, end='')

  for key, (_, variable) in targets.items():
    if key in usable and key not in wrong:
      old = variable.get_value()
      variable.set_value(jax.device_put(jnp.asarray(to_nnx(usable[key])), getattr(old, 'sharding', None)))
  return model
