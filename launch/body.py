"""What runs inside a Modal container, or here with `--local`: the same code either way.

`train` is the local training loop (`tinycats.train.loop`) with two additions a cloud run needs:
persisting each checkpoint (the volume `commit`) and, on a multi-node cluster, joining the JAX
processes first. Because the loop resumes from the latest checkpoint in its workdir, a call
that Modal retries after a preemption, or the same command run again, continues the run.
"""
from __future__ import annotations

import sys
from typing import Callable

import ml_collections


def train(config_dict: dict, workdir: str, commit: Callable[[], None] | None = None,
          distributed: dict | None = None) -> dict:
  """Trains (or resumes) the run in `workdir`; returns the summary. `distributed`: jax.distributed.initialize kwargs."""
  import jax
  from tinycats.train import loop
  if distributed:
    jax.distributed.initialize(**distributed)
  commit = commit or (lambda: None)
  config = ml_collections.ConfigDict(config_dict)
  print(f'tinycats: {jax.process_count()} process(es), {jax.device_count()} device(s) '
        f'({jax.devices()[0].device_kind}); workdir {workdir}', file=sys.stderr, flush=True)
  summary = loop.train_and_evaluate(config, workdir, on_checkpoint=lambda step: commit())
  commit()
  return dict(summary, workdir=workdir)


def prepare(data_dir: str, commit: Callable[[], None] | None = None) -> dict:
  """`tinycats prepare` into `data_dir` (TFDS downloads the archives), then persists it."""
  from tinycats.data import pets
  counts = pets.prepare(data_dir)
  (commit or (lambda: None))()
  return {'data_dir': data_dir, 'splits': counts}


def data_ready(data_dir: str) -> bool:
  """Whether `data_dir` holds a prepared oxford_iiit_pet."""
  from tinycats.data import pets
  return pets.is_prepared(data_dir)
