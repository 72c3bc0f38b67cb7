"""What runs inside a Modal container: `tinycats.train.loop.run`, as `tinycats train` and `--local` run it here.

It adds what a cloud run needs: persisting each checkpoint (the volume `commit`), on a multi-node cluster
joining the JAX processes first, and one call per run name (`train_claimed`, launch/claim.py). Because
the loop resumes from the latest checkpoint in its workdir, a call that Modal retries after a preemption,
or the same command run again, continues the run.
"""

from __future__ import annotations

import sys
from collections.abc import Callable

import ml_collections

from launch import claim
from tinycats.data import pets
from tinycats.train import loop


def train(
  config_dict: dict, workdir: str, commit: Callable[[], None] | None = None, distributed: dict | None = None
) -> dict:
  """Trains (or resumes) the run in `workdir`; returns the summary. `distributed`: jax.distributed.initialize kwargs."""
  commit = commit or (lambda: None)
  summary = loop.run(
    ml_collections.ConfigDict(config_dict), workdir, on_checkpoint=lambda step: commit(), distributed=distributed
  )
  commit()
  return dict(summary, workdir=workdir)


def train_claimed(store, call_id: str | None, stale_after: float, config_dict: dict, workdir: str, **kwargs) -> dict:
  """`train` under a claim on the run's name (the workdir's last part) in `store`, refreshed at each checkpoint.

  A refused claim comes back as {'refused': message}, not raised: Modal would retry an exception, and another
  call's run is no reason to.
  """
  commit = kwargs.pop('commit', None) or (lambda: None)
  run_name = workdir.rstrip('/').rsplit('/', 1)[-1]
  try:
    with claim.hold(store, run_name, call_id, stale_after) as heartbeat:
      return train(config_dict, workdir, commit=lambda: (commit(), heartbeat()), **kwargs)
  except claim.RunClaimed as e:
    print(e, file=sys.stderr)  # What `modal app logs` shows of a detached launch.
    return {'refused': str(e), 'workdir': workdir}


def prepare(data_dir: str, commit: Callable[[], None] | None = None) -> dict:
  """`tinycats prepare` into `data_dir` (TFDS downloads the archives), then persists it."""
  counts = pets.prepare(data_dir)
  (commit or (lambda: None))()
  return {'data_dir': data_dir, 'splits': counts}


def data_ready(data_dir: str) -> bool:
  """Whether `data_dir` holds a prepared oxford_iiit_pet."""
  return pets.is_prepared(data_dir)
