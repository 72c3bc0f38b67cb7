"""Training batches: a function of the step alone, the same whether gathered on the host or on the device."""

import numpy as np

from tinycats import sharding
from tinycats.data import Split
from tinycats.train import feed as feed_lib


def _split(n=20, side=4):
  rng = np.random.default_rng(0)
  return Split(
    rng.integers(0, 255, (n, side, side, 3), dtype=np.uint8),
    rng.integers(0, 5, n).astype(np.int32),
    [],
    [],
    rng.integers(1, side + 1, (n, 2)).astype(np.int32),
  )


def test_an_epoch_visits_every_example_once_in_a_seeded_order():
  rows = [feed_lib.batch_indices(20, step, 4, 5, seed=3) for step in range(5)]
  assert sorted(np.concatenate(rows).tolist()) == list(range(20))
  assert all((r == np.sort(r)).all() for r in rows)  # Sorted: sequential reads of the cache.
  again = [feed_lib.batch_indices(20, step, 4, 5, seed=3) for step in (4, 0, 2)]  # Any step, any order.
  assert all((a == rows[s]).all() for a, s in zip(again, (4, 0, 2)))
  assert not all((feed_lib.batch_indices(20, 5 + s, 4, 5, seed=3) == rows[s]).all() for s in range(5))  # New epoch.


def test_the_device_copy_gives_the_host_batches():
  split, mesh = _split(), sharding.make_mesh()
  host = feed_lib.Feed(split, mesh, batch_size=4, steps_per_epoch=5, seed=1, device_cache_gb=0)
  device = feed_lib.Feed(split, mesh, batch_size=4, steps_per_epoch=5, seed=1, device_cache_gb=1)
  assert host.resident is None and device.resident is not None
  for step in (0, 3, 7):
    batch, resident = host(step)
    rows, split_there = device(step)
    assert resident is None and set(rows) == {'index'}
    assert set(batch) == set(split_there) == {'image', 'size', 'label'}
    for field in ('image', 'size', 'label'):
      np.testing.assert_array_equal(np.asarray(split_there[field][rows['index']]), np.asarray(batch[field]))


def test_what_fits_on_the_devices():
  gb = 10**9
  assert feed_lib.fits_on_devices(gb, 4.0, None)  # No memory figure (the CPU): the size cap alone.
  assert not feed_lib.fits_on_devices(gb, 0.0, None)  # 0 turns it off.
  assert not feed_lib.fits_on_devices(5 * gb, 4.0, None)
  assert feed_lib.fits_on_devices(gb, 4.0, 80 * gb)
  assert not feed_lib.fits_on_devices(3 * gb, 4.0, 8 * gb)  # Over a quarter of a device's memory.
  assert feed_lib.on_devices(_split(), sharding.make_mesh(), 1e-9) is None  # 1,200 bytes over a 1-byte cap.
