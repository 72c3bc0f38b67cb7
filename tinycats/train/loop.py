"""The one training loop. A task (classifier, generator) plugs in its model, weights, loss and evaluation.

Per step: a deterministic batch (`feed.py`: an epoch permutation seeded by (seed, epoch), gathered on
the device when the split fits there), a key folded from the run's RNG by step, one jitted donated
update. Metrics stay on the device until a log step fetches them all at once (one host sync per
`log_every` steps), which is also where a non-finite loss is caught. Validation and a checkpoint
follow every `eval_every` steps. Because batches and keys are functions of the step alone, a run
restarted on its workdir resumes from the latest checkpoint and ends exactly where an
uninterrupted run would. Orbax keeps the best checkpoint and says which step it is; the
checkpoint's `meta` carries what else a resume needs (`Progress`).
"""

from __future__ import annotations

import copy
import dataclasses
import math
import os
import sys
import time

import jax
import numpy as np
from flax import nnx
from tqdm import tqdm

import tinycats.data
from tinycats import config as config_lib, files, models, plots, sharding, stored_config, writers
from tinycats.errors import UserError
from tinycats.train import compile_cache, feed as feed_lib, lock, state as state_lib, step as step_lib, tasks


class TrainingDiverged(UserError):
  """The loss, the gradient norm or a validation metric became NaN or infinite; the checkpoints saved before
  are kept, and a gentler setting resumes from the last."""


def itstime(step: int, every: int, total_steps: int) -> bool:
  """Whether `step` (1-based: steps done) is one of every `every` steps, or the last one."""
  return step == total_steps or (every > 0 and step % every == 0)


@dataclasses.dataclass
class Progress:
  """What a checkpoint's `meta` holds besides the arrays: where the run is and its early-stopping count.

  `best` is the best validation score so far as higher-is-better (a loss is negated), kept only to
  count evaluations without improvement; which step is best is Orbax's to say.
  """

  rng: list
  step: int = 0
  best: float = -math.inf
  evals_since_best: int = 0
  data: dict = dataclasses.field(default_factory=dict)

  @classmethod
  def from_meta(cls, meta: dict) -> Progress:
    return cls(**{f.name: meta[f.name] for f in dataclasses.fields(cls) if f.name in meta})

  def record(self, score: float) -> None:
    """Counts an evaluation: a strictly better score resets the count of evaluations since the best."""
    self.best, self.evals_since_best = (score, 0) if score > self.best else (self.best, self.evals_since_best + 1)


class _Interval:
  """The device metrics of the steps since the last log, and the images they trained on (throughput)."""

  def __init__(self):
    self.reset()

  def reset(self) -> None:
    self.pending, self.images, self.start = [], 0, time.perf_counter()

  def restart_clock(self) -> None:
    self.start = time.perf_counter()

  def row(self, schedule, ckpts) -> dict:
    """Fetches the pending metrics (one host sync), checks them, and returns their means as a log row."""
    fetched = jax.device_get([m for _, m in self.pending])
    for (s, _), m in zip(self.pending, fetched):
      for key in ('loss', 'grad_norm'):
        if key in m and not np.isfinite(m[key]):
          raise diverged(f'the {key.replace("_", " ")} became {m[key]} at step {s + 1}', ckpts)
    row = {'learning_rate': float(schedule(self.pending[-1][0]))}
    if self.images:
      row['images_per_sec'] = self.images / max(time.perf_counter() - self.start, 1e-9)
    for key in fetched[0]:
      row[('train_' if key in ('loss', 'accuracy') else '') + key] = float(np.mean([m[key] for m in fetched]))
    self.reset()
    return row


def diverged(what: str, ckpts) -> TrainingDiverged:
  """The error for a run that blew up, naming the checkpoint a rerun resumes from (every one saved has finite
  validation metrics: a non-finite validation stops the run before its save)."""
  ckpts.wait()
  last = ckpts.latest_step()
  if last is None:
    where = f'No checkpoint was written before, so a rerun starts over in {ckpts.directory}.'
  else:
    shown = ', '.join(f'{k} {v:.4g}' for k, v in sorted((ckpts.metrics(last) or {}).items()))
    where = f'A rerun resumes from step {last} in {ckpts.directory} ({shown}).'
  return TrainingDiverged(
    f'{what}; stopped. {where} Lower train.learning_rate, or keep train.grad_clip on, and run the same command.'
  )


def _check_batch(tc, mesh, train_examples: int | None = None) -> None:
  if tc.batch_size % (mesh.size * tc.get('grad_accum', 1)):
    raise config_lib.ConfigError(
      f'train.batch_size ({tc.batch_size}) must be a multiple of the device count '
      f'({mesh.size}) times train.grad_accum: every (micro-)batch is split evenly over devices'
    )
  if train_examples is not None and train_examples < tc.batch_size:
    raise config_lib.ConfigError(f'train.batch_size ({tc.batch_size}) exceeds the {train_examples} training images')


def _restore(ckpts, state, progress: Progress, workdir: str, config, train):
  """(state, progress) from the latest intact checkpoint, after checking that this config may resume it."""
  config_path = os.path.join(workdir, 'config.json')
  if os.path.isfile(config_path) and (
    conflicts := stored_config.resume_conflicts(stored_config.load_json(config_path), config)
  ):
    raise config_lib.ConfigError(
      f'{workdir} holds a run with other settings, which cannot be resumed with these:\n  '
      + '\n  '.join(conflicts)
      + '\nUse the settings in its config.json, or a fresh --workdir.'
    )
  _, stored, meta = ckpts.restore_newest_intact(state_lib.to_checkpoint(state), set_aside=True)
  progress = Progress.from_meta(meta)
  if progress.data['train_examples'] != len(train):  # Same config, but the images changed.
    raise config_lib.ConfigError(
      f'{workdir} was trained on {progress.data["train_examples"]} training images, the data now has '
      f'{len(train)}, so its data position cannot be resumed. Restore the data, or use a fresh --workdir.'
    )
  if progress.data.get('train_fingerprint', train.fingerprint) != train.fingerprint:  # Older runs have none.
    raise config_lib.ConfigError(
      f'{workdir} was trained on other training images than the data now holds (the same count, other '
      'names, pictures or labels), so it cannot be resumed on them. Restore the data, or use a fresh --workdir.'
    )
  print(f'resuming from step {progress.step} ({ckpts.directory})', file=sys.stderr)
  return state_lib.from_checkpoint(state, stored), progress


def train_and_evaluate(config, workdir: str, mesh=None, on_checkpoint=None) -> dict:
  """Trains `config` in `workdir` (resuming if it holds checkpoints), then evaluates on the test split.

  Returns the summary (also WORKDIR/summary.json). `on_checkpoint(step)` runs once each checkpoint
  is fully written (Modal commits its volume there).
  """
  # Build: the config (class names get recorded in this copy), pretrained weights (before any other
  # work, so a bad source fails at once), the data, the task, the model and optimizer.
  config = config_lib.validate(copy.deepcopy(config))
  if os.path.exists(workdir) and not os.path.isdir(workdir):
    raise UserError(f'--workdir {workdir} is a file, not a folder; name a folder (it is created if missing)')
  compile_cache.enable(config.train.compilation_cache)  # Before anything compiles: a rerun loads the steps.
  mesh = mesh or sharding.make_mesh()
  tc = config.train
  _check_batch(tc, mesh)
  weights = tasks.TASKS[config.task].fetch_weights(config)
  data = tinycats.data.load(config)
  config.data.classes = tuple(data.classes)
  _check_batch(tc, mesh, len(data.splits['train']))
  os.makedirs(workdir, exist_ok=True)  # Only once the data is checked: a refused run leaves no empty workdir.
  with lock.hold(workdir):  # Before anything in the workdir is read, deleted or rewritten; released on any exit.
    return _train_in_workdir(config, workdir, mesh, data, weights, on_checkpoint)


def _train_in_workdir(config, workdir: str, mesh, data, weights, on_checkpoint) -> dict:
  """The run itself, under the workdir's lock: the task, model and optimizer; restore; train; test the best."""
  tc = config.train
  files.refuse_links(workdir, files.WORKDIR_FOLDERS)  # Before Orbax or a grid writes through one.
  files.check_writable([workdir, *(os.path.join(workdir, name) for name in files.WORKDIR_FOLDERS)])
  train, val_split = data.splits['train'], data.splits['val']
  task = tasks.get(config)
  steps_per_epoch = len(train) // tc.batch_size
  total_steps = tc.get('steps', 0) or tc.epochs * steps_per_epoch  # A fixed budget, else whole epochs.
  eval_every = tc.eval_every or steps_per_epoch
  ckpts = state_lib.checkpoints(workdir, task, keep=tc.keep_checkpoints)
  model, optimizer, schedule = state_lib.create(task, config, steps_per_epoch, total_steps)
  if ckpts.latest_step() is None:  # A resumed run has its weights in the checkpoint.
    task.init_weights(model, weights)
  graphdef, state = nnx.split((model, optimizer))
  model_graphdef = nnx.graphdef(model)
  del model, optimizer

  # Restore.
  progress = Progress(rng=np.asarray(jax.random.key_data(jax.random.key(config.seed))).tolist())
  resumed = ckpts.latest_step() is not None
  if resumed:
    state, progress = _restore(ckpts, state, progress, workdir, config, train)
    tinycats.data.check_record(data, workdir)  # Its validation and test pictures are facts of the run too.
  tinycats.data.record(data, workdir)
  writer = writers.MetricWriter(os.path.join(workdir, 'metrics.jsonl'), progress.step if resumed else None)
  stored_config.save_json(config, os.path.join(workdir, 'config.json'))  # Only once the run can go on.

  state = jax.device_put(state, sharding.replicated(mesh))
  train_step = step_lib.for_task(task, graphdef, mesh)
  feed = feed_lib.Feed(
    train,
    mesh,
    batch_size=tc.batch_size,
    steps_per_epoch=steps_per_epoch,
    seed=config.seed,
    device_cache_gb=config.data.get('device_cache_gb', 0),
  )  # A config older than the field: host.
  rng = jax.random.wrap_key_data(np.asarray(progress.rng, np.uint32))
  step = progress.step
  sign = 1.0 if task.best_mode == 'max' else -1.0
  patience_spent = lambda: bool(tc.patience) and progress.evals_since_best >= tc.patience and step < total_steps
  stopped_early, compile_seconds, interval = patience_spent(), None, _Interval()
  train_start = time.perf_counter()
  bar = tqdm(total=total_steps, initial=step, desc='train', unit='step', file=sys.stderr, mininterval=2.0)
  try:
    while step < total_steps and not stopped_early:
      batch, resident = feed(step)
      state, step_metrics = train_step(state, batch, rng, step, resident)
      interval.pending.append((step, step_metrics))
      step += 1
      bar.update(1)
      if compile_seconds is None:  # One sync after the first step: compilation is not throughput.
        jax.block_until_ready(step_metrics)
        compile_seconds = time.perf_counter() - interval.start
        interval.restart_clock()
      else:
        interval.images += tc.batch_size

      if itstime(step, tc.log_every, total_steps) or itstime(step, eval_every, total_steps):
        row = interval.row(schedule, ckpts)
        writer.write(step, row)
        bar.set_postfix(loss=f'{row["train_loss"]:.4f}', img_s=f'{row.get("images_per_sec", 0):.0f}')

      if itstime(step, eval_every, total_steps):
        network = task.network(model_graphdef, state[0])
        val = task.validate(*network, val_split, mesh)
        writer.write(step, val)
        if not all(np.isfinite(v) for v in val.values()):  # Never saved: it would be resumed from.
          raise diverged(f'the validation at step {step} is not finite ({val})', ckpts)
        progress.record(sign * val[task.best_metric])
        epoch, batch_in_epoch = divmod(step, steps_per_epoch)
        progress.step = step
        progress.data = dict(
          train_examples=len(train), train_fingerprint=train.fingerprint, epoch=epoch, batch_in_epoch=batch_in_epoch
        )
        ckpts.save(step, state_lib.to_checkpoint(state), dataclasses.asdict(progress), metrics=val)
        if on_checkpoint is not None:
          ckpts.wait()  # Only a finished checkpoint is worth persisting.
          on_checkpoint(step)
        task.on_evaluation(*network, step, workdir)  # After the save: a failure here loses nothing.
        tqdm.write(f'step {step}: ' + ', '.join(f'{k} {v:.4f}' for k, v in val.items()), file=sys.stderr)
        interval.restart_clock()  # Validation time is not training throughput.
        if stopped_early := patience_spent():
          tqdm.write(f'early stop: no better {task.best_metric} for {tc.patience} evaluations', file=sys.stderr)
  finally:  # Never leave an async save half-written.
    bar.close()
    writer.close()
    ckpts.wait()
    best_step = ckpts.best_step()
    best = ckpts.metrics(best_step)[task.best_metric] if best_step is not None else None
    ckpts.close()
  train_seconds = time.perf_counter() - train_start
  feed = resident = None  # Frees the devices' copy of the training split before the test set is evaluated.

  # The best checkpoint's network on the test split.
  graphdef, model_state, best_step = state_lib.restore_model(workdir, task)
  report = task.evaluate(
    *task.network(graphdef, model_state), data.splits['test'], mesh, name='test', step=best_step, workdir=workdir
  )
  writers.write_report(report, workdir)
  plots.plot_curves(writer.path, os.path.join(workdir, 'curves.png'))
  speeds = [r['images_per_sec'] for r in writer.rows() if 'images_per_sec' in r]
  summary = dict(
    workdir=os.path.abspath(workdir),
    steps=step,
    total_steps=total_steps,
    stopped_early=stopped_early,
    best_step=best_step,
    best=best,
    metric=task.best_metric,
    **{f'test_{k}': report[k] for k in task.summary_metrics},
    train_seconds=round(train_seconds, 1),
    compile_seconds=round(compile_seconds or 0.0, 1),
    images_per_sec=round(float(np.median(speeds)), 1) if speeds else None,
    skipped_images={name: len(split.skipped) for name, split in data.splits.items()},
    devices=mesh.size,
    platform=jax.default_backend(),
    compute_dtype=str(models.compute_dtype(config.model.dtype)),
  )  # What 'auto' became here.
  writers.write_json(summary, os.path.join(workdir, 'summary.json'))
  return summary


def run(config, workdir: str, on_checkpoint=None, distributed: dict | None = None) -> dict:
  """What every training command runs (`tinycats train`, `launch.modal_train --local`, the Modal function).

  Joins the JAX processes first when `distributed` (jax.distributed.initialize kwargs) is given, says where
  it runs, then trains (or resumes) the run in `workdir`; returns the summary.
  """
  if distributed:
    jax.distributed.initialize(**distributed)
  print(
    f'tinycats: {jax.process_count()} process(es), {jax.device_count()} device(s) '
    f'({jax.devices()[0].device_kind}); workdir {workdir}',
    file=sys.stderr,
    flush=True,
  )
  return train_and_evaluate(config, workdir, on_checkpoint=on_checkpoint)
