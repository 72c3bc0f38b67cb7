"""Trained weights as files: flat-key safetensors (NNX layout) and torchvision's layout.

`model.safetensors` holds the whole inference state of the exported network (parameters,
BatchNorm statistics, the DiT's fixed position table) under keys joined from its NNX path,
e.g. `layer2.0.downsample.0.kernel` or `blocks.3.attn.qkv.kernel`, in NNX's layouts (conv
kernels HWIO, linear (in, out)). Next to `config.json` it is a complete model that
`inference.load(folder)` rebuilds.
"""

from __future__ import annotations

import numpy as np
from flax import nnx, traverse_util
from safetensors.numpy import save_file

from tinycats import pretrained
from tinycats.inference import flat_key

TORCHVISION_WEIGHTS = 'model_torchvision.safetensors'


def flat_arrays(state) -> dict[str, np.ndarray]:
  """{'a.b.0.kernel': contiguous numpy array} for an NNX state (contiguous: safetensors writes memory order)."""
  flat = traverse_util.flatten_dict(nnx.to_pure_dict(state))
  return {flat_key(path): np.ascontiguousarray(np.asarray(value)) for path, value in flat.items()}


def save(state, path: str, metadata: dict[str, str] | None = None) -> None:
  save_file(flat_arrays(state), path, metadata=metadata)


def torchvision_state_dict(state, num_batches_tracked: int = 0) -> dict[str, np.ndarray]:
  """A ResNet's state in torchvision's key names and layouts, ready for `load_state_dict(strict=True)`.

  torchvision's BatchNorm also carries `num_batches_tracked`; it is unused in eval mode and set to
  `num_batches_tracked` (the training steps) so that strict loading finds every key.
  """
  out = {
    pretrained.torchvision_key(path): pretrained.to_torch(variable.get_value())
    for path, variable in nnx.to_flat_state(state)
  }
  for key in [k for k in out if k.endswith('.running_var')]:
    out[key.removesuffix('running_var') + 'num_batches_tracked'] = np.array(num_batches_tracked, np.int64)
  return out
