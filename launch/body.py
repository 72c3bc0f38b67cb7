"""What runs inside a Modal container: `tinycats.train.loop.run`, as `tinycats train` and `--local` run it here.

It adds two things a cloud run needs: persisting each checkpoint (the volume `commit`) and, on a
multi-node cluster, joining the JAX processes first. Because the loop resumes from the latest
checkpoint in its workdir, a call that Modal retries after a preemption, or the same command run
again, continues the run.
"""

from __future__ import annotations

from collections.abc import Callable

import ml_collections

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


def prepare(data_dir: str, commit: Callable[[], None] | None = None) -> dict:
  """`tinycats prepare` into `data_dir` (TFDS downloads the archives), then persists it."""
  counts = pets.prepare(data_dir)
  (commit or (lambda: None))()
  return {'data_dir': data_dir, 'splits': counts}


def data_ready(data_dir: str) -> bool:
  """Whether `data_dir` holds a prepared oxford_iiit_pet."""
  return pets.is_prepared(data_dir)
