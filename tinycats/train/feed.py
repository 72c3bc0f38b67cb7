"""Training batches as a function of the step alone, from the host cache or from a copy on the devices.

The order is an epoch permutation seeded by (seed, epoch), so a resumed run needs only its step.
A split small enough (`data.device_cache_gb`: Oxford-IIIT Pet's 3.3k training squares at 256 px
are 0.65 GB) is copied once to every device; each step then sends only its batch's row indices
and the train step gathers the rows there, so no image crosses from the host while training.
A larger split is gathered on the host and sent each step. Both give the same batches.
"""
from __future__ import annotations

import functools
import sys

import jax
import numpy as np

from tinycats.train import step as step_lib


@functools.lru_cache(maxsize=2)
def epoch_order(seed: int, epoch: int, n: int) -> np.ndarray:
  """The epoch's example order, computed once per epoch rather than once per step."""
  order = np.random.default_rng([seed, epoch]).permutation(n)
  order.flags.writeable = False
  return order


def batch_indices(n: int, step: int, batch_size: int, steps_per_epoch: int, seed: int) -> np.ndarray:
  """The sorted rows of `step`'s batch among `n` examples (sorted: sequential reads of the cache)."""
  epoch, index = divmod(step, steps_per_epoch)
  return np.sort(epoch_order(seed, epoch, n)[index * batch_size:(index + 1) * batch_size]).astype(np.int32)


def train_batch(split, step: int, batch_size: int, steps_per_epoch: int, seed: int) -> dict[str, np.ndarray]:
  """The host batch for `step`: the rows of `batch_indices` from the cache."""
  chosen = batch_indices(len(split), step, batch_size, steps_per_epoch, seed)
  return {'image': np.asarray(split.images[chosen]), 'label': split.labels[chosen]}


def on_devices(split, mesh, max_gb: float) -> dict[str, jax.Array] | None:
  """The split's images and labels replicated on every device of `mesh`, or None if it is too big.

  Too big: over `max_gb` (0 turns this off), or over a quarter of a device's memory where the
  backend reports it (GPUs do), leaving the rest to the model and its activations.
  """
  nbytes = split.images.nbytes + split.labels.nbytes
  if not max_gb or nbytes > max_gb * 2**30:
    return None
  try:
    limit = (mesh.devices.flat[0].memory_stats() or {}).get('bytes_limit')
  except Exception:  # pylint: disable=broad-except  # Not every backend reports memory.
    limit = None
  if limit and nbytes > limit / 4:
    return None
  sharding = step_lib.replicated(mesh)
  print(f'training images kept on each device: {len(split)} images, {nbytes / 2**20:.0f} MiB', file=sys.stderr)
  return {'image': jax.device_put(np.asarray(split.images), sharding),
          'label': jax.device_put(np.asarray(split.labels, np.int32), sharding)}


class Feed:
  """`feed(step) -> (batch, source)` for `TrainStep(state, batch, rng, step, source)`.

  With the split on the devices, `batch` is {'index'} and `source` the resident split; otherwise
  `batch` is {'image', 'label'} gathered on the host and `source` is None.
  """

  def __init__(self, split, mesh, *, batch_size: int, steps_per_epoch: int, seed: int, device_cache_gb: float):
    self.split, self.mesh = split, mesh
    self.batch_size, self.steps_per_epoch, self.seed = batch_size, steps_per_epoch, seed
    self.source = on_devices(split, mesh, device_cache_gb)

  def __call__(self, step: int):
    if self.source is None:
      host = train_batch(self.split, step, self.batch_size, self.steps_per_epoch, self.seed)
      return step_lib.shard_batch(host, self.mesh), None
    rows = batch_indices(len(self.split), step, self.batch_size, self.steps_per_epoch, self.seed)
    return step_lib.shard_batch({'index': rows}, self.mesh), self.source
