"""The one place for meshes, shardings and global arrays, and the one pad-and-batch inference helper.

Data parallelism is a 1-D mesh over every device: a batch is sharded on axis 'data' and the
state is replicated, so XLA inserts the gradient (and BatchNorm statistics) all-reduces and
a step computes the same thing on one device or many.
"""

from __future__ import annotations

import jax
import numpy as np
from jax.sharding import NamedSharding, PartitionSpec as P

from tinycats.errors import UserError


def make_mesh(devices=None) -> jax.sharding.Mesh:
  devices = np.asarray(devices if devices is not None else jax.devices())
  return jax.sharding.Mesh(devices, ('data',))


def batch_sharding(mesh) -> NamedSharding:
  return NamedSharding(mesh, P('data'))


def replicated(mesh) -> NamedSharding:
  return NamedSharding(mesh, P())


def global_array(x: np.ndarray, sharding) -> jax.Array:
  """A global array from a host array that every process holds whole; each process fills only its devices.

  Not `jax.device_put`: with several processes it first checks, with a collective, that all of them
  passed the same value, which would stall every step until the previous one ends.
  """
  x = np.asarray(x)
  return jax.make_array_from_callback(x.shape, sharding, lambda index: x[index])


def shard_batch(batch: dict[str, np.ndarray], mesh) -> dict[str, jax.Array]:
  """Host arrays -> one global array per field, split over the mesh's 'data' axis."""
  sharding = batch_sharding(mesh)
  return {k: global_array(v, sharding) for k, v in batch.items()}


def run_batched(fn, state, arrays: tuple[np.ndarray, ...], batch_size: int, mesh):
  """`fn(state, *batch)` over `arrays` in fixed-size batches (the last one padded), outputs concatenated.

  One shape means one compilation; every batch is dispatched before any result is fetched, so
  the device never waits on the host. The batch is rounded up so every device gets the same share.
  """
  total = len(arrays[0])
  if total == 0:
    raise UserError('no images to run the model on')
  batch_size = -(-min(batch_size, total) // mesh.size) * mesh.size
  sharding = batch_sharding(mesh)
  pending = []
  for start in range(0, total, batch_size):
    chunks = [np.asarray(a[start : start + batch_size]) for a in arrays]
    n = len(chunks[0])
    if n < batch_size:
      chunks = [np.concatenate([c, np.zeros((batch_size - n,) + c.shape[1:], c.dtype)]) for c in chunks]
    pending.append((fn(state, *(global_array(c, sharding) for c in chunks)), n))
  outputs = [jax.tree.map(lambda x, n=n: np.asarray(x)[:n], out) for out, n in pending]
  return jax.tree.map(lambda *parts: np.concatenate(parts), *outputs)
