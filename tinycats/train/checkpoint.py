"""Orbax checkpoints of the whole training state: model, optimizer, step, RNG, data position.

`WORKDIR/checkpoints/<step>/` holds `model` and `optimizer` (NNX states as plain dicts of arrays,
separate so that inference and export restore the model alone) and `meta` (JSON: RNG key data,
data-iterator position, early-stopping counters). The last
`keep` checkpoints are kept, and the best by the task's validation metric (the classifier's highest
balanced accuracy, the generator's lowest loss). Of equal scores the later step is the best: Orbax's
`best_step` and `BestN` both take the last of a stable ascending sort of the steps; the training
loop reads the best step from here and tracks none of its own. Orbax writes into a temporary folder and renames it on
success, so a run killed mid-save leaves no checkpoint that restore would pick up. A step damaged later on
disk (a truncated or deleted file) is told apart from a config mismatch: restore falls back to the newest
intact step with one warning (`restore_newest_intact`).
"""

from __future__ import annotations

import contextlib
import logging
import math
import os
import shutil
import time
import warnings
from typing import Any

import jax
import numpy as np
import orbax.checkpoint as ocp
from orbax.checkpoint import checkpoint_managers as policies

from tinycats.errors import UserError, file_system_error


def _shown(record: logging.LogRecord) -> bool:
  """Opening checkpoints read-only for evaluation is deliberate; Orbax warns about it every time. A full or
  read-only disk is logged by Orbax's threads with tracebacks (and, once the command has said so and exits, by
  a thread left behind that can no longer run); the command reports it once, in one line."""
  message = record.getMessage()
  caught = record.exc_info[1] if record.exc_info else None
  quiet = ('Given directory is read only', 'cannot schedule new futures after interpreter shutdown')
  return not any(text in message for text in quiet) and not (
    file_system_error(caught) or file_system_error(ValueError(message))
  )


logging.getLogger('absl').addFilter(_shown)


ARRAY_ITEMS = ('model', 'optimizer')
# Orbax writes a step into `<step>.orbax-checkpoint-tmp-<time>`, then renames it.
PARTIAL_SAVE = '.orbax-checkpoint-tmp'


class CheckpointMismatchError(UserError):
  """The checkpoint's arrays do not fit the model the config builds."""


class CheckpointDamaged(UserError):
  """A checkpoint step's files are missing or unreadable (not a model of another shape)."""

  def __init__(self, message: str, step: int | None = None):
    super().__init__(message)
    self.step = step


def _reason(e: Exception) -> str:
  """An Orbax or TensorStore error as one short line."""
  text = ' '.join(str(e).split())
  return f'{type(e).__name__}: {text[:200]}{"..." if len(text) > 200 else ""}'


def _path(keys) -> str:
  return '.'.join(str(getattr(k, 'key', getattr(k, 'idx', k))) for k in keys)


def check_shapes(stored: Any, target: Any, directory: str) -> None:
  """Raises a message naming every leaf whose shape differs or that only one side has."""
  stored_leaves = {_path(p): tuple(getattr(v, 'shape', ())) for p, v in jax.tree_util.tree_leaves_with_path(stored)}
  target_leaves = {_path(p): tuple(np.shape(v)) for p, v in jax.tree_util.tree_leaves_with_path(target)}
  problems = [
    f'  {k}: checkpoint {stored_leaves[k]} vs model {target_leaves[k]}'
    for k in sorted(stored_leaves.keys() & target_leaves.keys())
    if stored_leaves[k] != target_leaves[k]
  ]
  problems += [
    f'  {k}: in the checkpoint, not in the model' for k in sorted(stored_leaves.keys() - target_leaves.keys())
  ]
  problems += [
    f'  {k}: in the model, not in the checkpoint' for k in sorted(target_leaves.keys() - stored_leaves.keys())
  ]
  if problems:
    shown = '\n'.join(problems[:20]) + (f'\n  ... and {len(problems) - 20} more' if len(problems) > 20 else '')
    raise CheckpointMismatchError(
      f'the checkpoint in {directory} does not fit what the config builds:\n{shown}\n'
      'Use the config the checkpoint was trained with (WORKDIR/config.json) or a fresh workdir.'
    )


def _restore_target(x) -> jax.ShapeDtypeStruct:
  """Shape, dtype and where to put it: the target's own sharding, else this process's first device.

  Always explicit, so a checkpoint written by 8 GPUs or several processes restores on one CPU.
  """
  sharding = getattr(x, 'sharding', None)
  if not isinstance(sharding, jax.sharding.Sharding):
    sharding = jax.sharding.SingleDeviceSharding(jax.local_devices()[0])
  return jax.ShapeDtypeStruct(np.shape(x), x.dtype, sharding=sharding)


class Checkpoints:
  """A thin, named wrapper over `ocp.CheckpointManager` with tinycats' retention policy."""

  def __init__(
    self,
    directory: str,
    keep: int = 2,
    best_metric: str = 'val_balanced_accuracy',
    best_mode: str = 'max',
    read_only: bool = False,
  ):
    self.directory = os.path.abspath(directory)
    sign = 1.0 if best_mode == 'max' else -1.0  # Ranked as higher-is-better, so a lower loss ranks higher.
    # A checkpoint saved before its task recorded `best_metric` ranks below every one that has it.
    best = lambda metrics: sign * metrics[best_metric] if best_metric in metrics else -math.inf
    policy = policies.AnyPreservationPolicy(
      [
        policies.LatestN(n=keep),
        policies.BestN(get_metric_fn=best, n=1, keep_checkpoints_without_metrics=False),
      ]
    )
    options = ocp.CheckpointManagerOptions(
      best_fn=best,
      best_mode='max',
      preservation_policy=policy,
      read_only=read_only,
      create=not read_only,
      enable_async_checkpointing=True,
      save_interval_steps=0 if read_only else 1,
    )
    handlers = {name: ocp.StandardCheckpointHandler() for name in ARRAY_ITEMS}
    handlers['meta'] = ocp.JsonCheckpointHandler()
    if not read_only:  # The writer, under the workdir's lock: what an interrupted save left is no step at all.
      self.remove_partial_saves()
    self._manager = ocp.CheckpointManager(self.directory, options=options, item_handlers=handlers)

  def remove_partial_saves(self) -> list[str]:
    """Deletes the temporary folders of saves that never finished (killed, or a full disk); returns their names."""
    if jax.process_index() != 0 or not os.path.isdir(self.directory):
      return []
    partial = sorted(name for name in os.listdir(self.directory) if PARTIAL_SAVE in name)
    for name in partial:
      shutil.rmtree(os.path.join(self.directory, name), ignore_errors=True)
    return partial

  def latest_step(self) -> int | None:
    return self._manager.latest_step()

  def best_step(self) -> int | None:
    return self._manager.best_step()

  def all_steps(self) -> list[int]:
    return sorted(self._manager.all_steps())

  def metrics(self, step: int) -> dict | None:
    """The metrics a checkpoint was saved with (its validation), as Orbax recorded them."""
    return self._manager.metrics(step)

  def save(self, step: int, items: dict[str, Any], meta: dict, metrics: dict | None = None) -> None:
    """Saves `items` ({'model': ..., 'optimizer': ...}) and `meta` asynchronously."""
    args = {name: ocp.args.StandardSave(tree) for name, tree in items.items()}
    try:  # The synchronous part of a save, or the failure of the previous async one, surfaces here.
      self._manager.save(
        step, args=ocp.args.Composite(meta=ocp.args.JsonSave(meta), **args), metrics=metrics, force=True
      )
    except BaseException:
      self._abandon()
      raise

  def restore(self, step: int, targets: dict[str, Any]) -> tuple[dict[str, Any], dict]:
    """Restores the items named in `targets` into their structure, shapes, dtypes and shardings."""
    try:
      metadata = self._manager.item_metadata(step)
    except Exception as e:  # Whatever Orbax raises on unreadable files: the step is damaged.
      raise CheckpointDamaged(f'step {step}: {_reason(e)}', step) from e
    args = {}
    for name, target in targets.items():
      if metadata.get(name) is None:  # Its _METADATA is gone: damage, not a model without leaves.
        raise CheckpointDamaged(f'step {step}: {name}/_METADATA is missing', step)
      check_shapes(metadata[name], target, f'{self.directory} (step {step}, {name})')
      args[name] = ocp.args.StandardRestore(jax.tree.map(_restore_target, target))
    try:
      restored = self._manager.restore(step, args=ocp.args.Composite(meta=ocp.args.JsonRestore(), **args))
    except Exception as e:  # The shapes fit (checked above), so a failure to read is a damaged file.
      raise CheckpointDamaged(f'step {step}: {_reason(e)}', step) from e
    return {name: restored[name] for name in targets}, restored['meta']

  def restore_newest_intact(
    self, targets: dict[str, Any], first: int | None = None, set_aside: bool = False
  ) -> tuple[int, dict[str, Any], dict]:
    """(step, items, meta) of step `first` (default: the latest), else of the newest intact step.

    Falling back warns once, naming the damaged steps. `set_aside` (training, which will write those
    step numbers again) moves the damaged steps to WORKDIR/damaged_checkpoints/ rather than deleting them.
    When no step is intact: one line naming the folder and the way out.
    """
    steps = sorted(self._manager.all_steps(), reverse=True)
    first = steps[0] if first is None else first
    damaged = []
    for step in [first] + [s for s in steps if s != first]:
      try:
        stored, meta = self.restore(step, targets)
      except CheckpointDamaged as e:
        damaged.append(e)
        continue
      if damaged:
        moved = self._set_aside([d.step for d in damaged]) if set_aside else None
        warnings.warn(
          f'damaged checkpoint in {self.directory}: '
          + '; '.join(str(d) for d in damaged)
          + f'. Using step {step}, the newest intact one'
          + (f'; the damaged steps were moved to {moved}' if moved else ''),
          stacklevel=2,
        )
      return step, stored, meta
    if not damaged:
      raise FileNotFoundError(f'no checkpoint in {self.directory}; train first, or check --workdir')
    raise CheckpointDamaged(
      f'no intact checkpoint in {self.directory}: '
      + '; '.join(str(d) for d in damaged)
      + '. Delete the damaged step folders (a run then starts from scratch) or train in a new workdir'
    )

  def _set_aside(self, steps: list[int]) -> str:
    """Moves the step folders out of Orbax's sight, keeping them for a look; returns where they went."""
    root = os.path.join(os.path.dirname(self.directory), 'damaged_checkpoints')
    for step in steps if jax.process_index() == 0 else ():  # The process that writes the run's files.
      target = os.path.join(root, str(step))
      if os.path.exists(target):
        target += f'.{int(time.time())}'
      shutil.move(os.path.join(self.directory, str(step)), target)
    self._manager.reload()
    return root

  def wait(self) -> None:
    try:
      self._manager.wait_until_finished()
    except BaseException:
      self._abandon()
      raise

  def _abandon(self) -> None:
    """After a failed save (a full disk): stops Orbax's threads, or they fail again at exit, and deletes the
    half-written step, which also frees the space it took."""
    with contextlib.suppress(BaseException):
      self._manager.close()
    self.remove_partial_saves()

  def close(self) -> None:
    self._manager.close()
