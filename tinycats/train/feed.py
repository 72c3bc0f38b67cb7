"""Training batches as a function of the step alone, from the host cache or from a copy on the devices.

The order is an epoch permutation seeded by (seed, epoch), so a resumed run needs only its step.
A split small enough (`data.device_cache_gb`: Oxford-IIIT Pet's 3.3k training canvases at 320 px
are 1.0 GB) is copied once to every device; each step then sends only its batch's row indices
and the train step gathers the rows there, so no image crosses from the host while training.
A larger split is gathered on the host and sent each step. Both give the same batches.
"""

from __future__ import annotations

import functools
import sys

import jax
import numpy as np
from jax.experimental import multihost_utils

from tinycats import sharding


@functools.lru_cache(maxsize=2)
def epoch_order(seed: int, epoch: int, n: int) -> np.ndarray:
  """The epoch's example order, computed once per epoch rather than once per step."""
  order = np.random.default_rng([seed, epoch]).permutation(n)
  order.flags.writeable = False
  return order


def batch_indices(n: int, step: int, batch_size: int, steps_per_epoch: int, seed: int) -> np.ndarray:
  """The sorted rows of `step`'s batch among `n` examples (sorted: sequential reads of the cache)."""
  epoch, index = divmod(step, steps_per_epoch)
  return np.sort(epoch_order(seed, epoch, n)[index * batch_size : (index + 1) * batch_size]).astype(np.int32)


def train_batch(split, step: int, batch_size: int, steps_per_epoch: int, seed: int) -> dict[str, np.ndarray]:
  """The host batch for `step`: the rows of `batch_indices` from the cache (canvases, picture sizes, labels)."""
  chosen = batch_indices(len(split), step, batch_size, steps_per_epoch, seed)
  return {
    'image': np.asarray(split.images[chosen]),
    'size': np.asarray(split.sizes[chosen], np.int32),
    'label': split.labels[chosen],
  }


def _device_memory(mesh) -> int | None:
  """Bytes one of this process's devices can hold, where the backend says (GPUs do; the CPU does not)."""
  try:
    stats = mesh.local_devices[0].memory_stats()
  except (RuntimeError, NotImplementedError):  # jaxlib raises these where a backend keeps no statistics.
    return None
  return (stats or {}).get('bytes_limit')


def fits_on_devices(nbytes: int, max_gb: float, device_memory: int | None) -> bool:
  """Whether a split of `nbytes` is kept on the devices: at most `max_gb` GB (0: never) and at most a
  quarter of a device's memory where that is known, leaving the rest to the model and its activations."""
  return bool(max_gb) and nbytes <= max_gb * 1e9 and (not device_memory or nbytes <= device_memory / 4)


def on_devices(split, mesh, max_gb: float) -> dict[str, jax.Array] | None:
  """The split's images, sizes and labels replicated on every device of `mesh`, or None if it does not fit.

  With several processes, process 0's answer is everyone's: one process feeding from the host while
  another gathers on its devices would run different programs and hang.
  """
  nbytes = split.images.nbytes + split.sizes.nbytes + split.labels.nbytes
  fits = fits_on_devices(nbytes, max_gb, _device_memory(mesh))
  if jax.process_count() > 1:
    fits = bool(multihost_utils.broadcast_one_to_all(np.asarray(fits)))
  if not fits:
    return None
  print(f'training images kept on each device: {len(split)} images, {nbytes / 1e9:.2f} GB', file=sys.stderr)
  everywhere = sharding.replicated(mesh)
  return {
    'image': sharding.global_array(split.images, everywhere),
    'size': sharding.global_array(np.asarray(split.sizes, np.int32), everywhere),
    'label': sharding.global_array(np.asarray(split.labels, np.int32), everywhere),
  }


class Feed:
  """`feed(step) -> (batch, resident)` for `TrainStep(state, batch, rng, step, resident)`.

  With the split on the devices, `batch` is {'index'} and `resident` the split there; otherwise
  `batch` is {'image', 'size', 'label'} gathered on the host and `resident` is None.
  """

  def __init__(self, split, mesh, *, batch_size: int, steps_per_epoch: int, seed: int, device_cache_gb: float):
    self.split, self.mesh = split, mesh
    self.batch_size, self.steps_per_epoch, self.seed = batch_size, steps_per_epoch, seed
    self.resident = on_devices(split, mesh, device_cache_gb)

  def __call__(self, step: int):
    if self.resident is None:
      host = train_batch(self.split, step, self.batch_size, self.steps_per_epoch, self.seed)
      return sharding.shard_batch(host, self.mesh), None
    rows = batch_indices(len(self.split), step, self.batch_size, self.steps_per_epoch, self.seed)
    return sharding.shard_batch({'index': rows}, self.mesh), self.resident
