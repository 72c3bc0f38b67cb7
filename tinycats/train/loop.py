"""The one training loop. A task (classifier, generator) plugs in its model, weights, loss and evaluation.

Per step: a deterministic batch (`feed.py`: an epoch permutation seeded by (seed, epoch), gathered on
the device when the split fits there), a key folded from the run's RNG by step, one jitted donated
update. Metrics stay on the device until a log step fetches them all at once (one host sync per
`log_every` steps), which is also where a non-finite loss is caught. Validation and a checkpoint
follow every `eval_every` steps. Because batches and keys are functions of the step alone, a run
restarted on its workdir resumes from the latest checkpoint and ends exactly where an
uninterrupted run would. Orbax keeps the best checkpoint and says which step it is and what it scored;
the checkpoint's `meta` carries what else a resume needs (`Progress`).

`build` makes what a run needs from its config (also what `benchmarks/` times); `train_and_evaluate`
reads top to bottom: build, restore, train, test the best checkpoint.
"""

from __future__ import annotations

import copy
import dataclasses
import math
import os
import sys
import time
from typing import Any

import jax
import numpy as np
import optax
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

  `evals_since_best` counts the evaluations that did not beat the score of Orbax's best checkpoint (which
  step is best, and its score, are Orbax's to say). Older checkpoints also hold a `best`, ignored.
  """

  rng: list
  step: int = 0
  evals_since_best: int = 0
  data: dict = dataclasses.field(default_factory=dict)

  @classmethod
  def from_meta(cls, meta: dict) -> Progress:
    return cls(**{f.name: meta[f.name] for f in dataclasses.fields(cls) if f.name in meta})


@dataclasses.dataclass
class Setup:
  """What `build` makes of a config: everything a run needs before its first step."""

  task: tasks.Task
  graphdef: Any  # Of the (model, optimizer) pair.
  model_graphdef: Any  # Of the model alone: with `state[0]`, the network the task validates.
  state: Any  # The (model, optimizer) state, replicated over the mesh.
  train_step: step_lib.TrainStep
  feed: feed_lib.Feed
  schedule: optax.Schedule
  steps_per_epoch: int
  total_steps: int


def check_batch(tc, mesh, train_examples: int) -> None:
  """Refuses a batch that does not split evenly over the devices, or that the training split cannot fill."""
  if tc.batch_size % (mesh.size * tc.get('grad_accum', 1)):
    raise config_lib.ConfigError(
      f'train.batch_size ({tc.batch_size}) must be a multiple of the device count '
      f'({mesh.size}) times train.grad_accum: every (micro-)batch is split evenly over devices'
    )
  if train_examples < tc.batch_size:
    raise config_lib.ConfigError(f'train.batch_size ({tc.batch_size}) exceeds the {train_examples} training images')


def build(config, mesh, train, weights=None) -> Setup:
  """The run `config` describes on `mesh`, fed from the split `train`: task, model and optimizer (fresh, or
  starting from `weights`, the task's `fetch_weights`), the jitted step, the batches and the schedule.

  `config.data.classes` names the classes. A budget of `train.steps` wins over `train.epochs` whole epochs.
  """
  tc = config.train
  check_batch(tc, mesh, len(train))
  task = tasks.get(config)
  steps_per_epoch = len(train) // tc.batch_size
  total_steps = tc.get('steps', 0) or tc.epochs * steps_per_epoch
  model, optimizer, schedule = state_lib.create(task, config, steps_per_epoch, total_steps)
  task.init_weights(model, weights)
  graphdef, state = nnx.split((model, optimizer))
  feed = feed_lib.Feed(
    train,
    mesh,
    batch_size=tc.batch_size,
    steps_per_epoch=steps_per_epoch,
    seed=config.seed,
    device_cache_gb=config.data.get('device_cache_gb', 0),  # A config older than the field: host.
  )
  return Setup(
    task=task,
    graphdef=graphdef,
    model_graphdef=nnx.graphdef(model),
    state=jax.device_put(state, sharding.replicated(mesh)),
    train_step=step_lib.for_task(task, graphdef, mesh),
    feed=feed,
    schedule=schedule,
    steps_per_epoch=steps_per_epoch,
    total_steps=total_steps,
  )


class _Interval:
  """The steps since the last log: their metrics (still on the device), and the images trained since the clock
  started (throughput)."""

  def __init__(self):
    self.pending, self.images, self.start = [], 0, time.perf_counter()

  def restart_clock(self) -> None:
    self.images, self.start = 0, time.perf_counter()

  def fetch(self) -> tuple[list[tuple[int, dict]], float | None]:
    """((step, metrics) of each pending step, fetched in one host sync; images per second), then starts anew."""
    fetched = list(zip([s for s, _ in self.pending], jax.device_get([m for _, m in self.pending])))
    speed = self.images / max(time.perf_counter() - self.start, 1e-9) if self.images else None
    self.pending = []
    self.restart_clock()
    return fetched, speed


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


def _check_finite(fetched: list[tuple[int, dict]], ckpts) -> None:
  """Stops the run at the first step whose loss or gradient norm is NaN or infinite."""
  for s, m in fetched:
    for key in ('loss', 'grad_norm'):
      if key in m and not np.isfinite(m[key]):
        raise diverged(f'the {key.replace("_", " ")} became {m[key]} at step {s + 1}', ckpts)


def _log_row(fetched: list[tuple[int, dict]], schedule, images_per_sec: float | None) -> dict:
  """The logged means of the fetched steps' metrics, with the learning rate and the throughput."""
  row = {'learning_rate': float(schedule(fetched[-1][0]))}
  if images_per_sec is not None:
    row['images_per_sec'] = images_per_sec
  for key in fetched[0][1]:
    row[('train_' if key in ('loss', 'accuracy') else '') + key] = float(np.mean([m[key] for _, m in fetched]))
  return row


def _best_score(ckpts, task) -> float:
  """The score of Orbax's best checkpoint as higher-is-better (a loss negated); -inf before the first."""
  best_step = ckpts.best_step()
  if best_step is None:
    return -math.inf
  ckpts.wait()  # Orbax writes a step's metrics with it: a save in flight has none on disk yet.
  value = (ckpts.metrics(best_step) or {}).get(task.best_metric)
  return -math.inf if value is None else (value if task.best_mode == 'max' else -value)


def _patience_spent(tc, evals_since_best: int, step: int, total_steps: int) -> bool:
  return bool(tc.patience) and evals_since_best >= tc.patience and step < total_steps


def _restore(ckpts, state, workdir: str, config, train) -> tuple[Any, Progress]:
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
  # work, so a bad source fails at once), the data, then the run.
  config = config_lib.validate(copy.deepcopy(config))
  if os.path.exists(workdir) and not os.path.isdir(workdir):
    raise UserError(f'--workdir {workdir} is a file, not a folder; name a folder (it is created if missing)')
  compile_cache.enable(config.train.compilation_cache)  # Before anything compiles: a rerun loads the steps.
  mesh = mesh or sharding.make_mesh()
  tc = config.train
  weights = tasks.TASKS[config.task].fetch_weights(config)
  data = tinycats.data.load(config)
  config.data.classes = tuple(data.classes)
  train = data.splits['train']
  setup = build(config, mesh, train, weights)  # A resumed run's weights are then replaced by its checkpoint's.
  task, total_steps, eval_every = setup.task, setup.total_steps, tc.eval_every or setup.steps_per_epoch
  os.makedirs(workdir, exist_ok=True)  # Only once the data is checked: a refused run leaves no empty workdir.
  with lock.hold(workdir):  # Before anything in the workdir is read, deleted or rewritten; released on any exit.
    files.refuse_links(workdir, files.WORKDIR_FOLDERS)  # Before Orbax or a grid writes through one.
    files.check_writable([workdir, *(os.path.join(workdir, name) for name in files.WORKDIR_FOLDERS)])

    # Restore: the latest intact checkpoint, if any, with the step, RNG and early-stopping count it saved.
    ckpts = state_lib.checkpoints(workdir, task, keep=tc.keep_checkpoints)
    state, progress = setup.state, Progress(rng=np.asarray(jax.random.key_data(jax.random.key(config.seed))).tolist())
    resumed = ckpts.latest_step() is not None
    if resumed:
      state, progress = _restore(ckpts, state, workdir, config, train)
      tinycats.data.check_record(data, workdir)  # Its validation and test pictures are facts of the run too.
    tinycats.data.record(data, workdir)
    writer = writers.MetricWriter(os.path.join(workdir, 'metrics.jsonl'), progress.step if resumed else None)
    stored_config.save_json(config, os.path.join(workdir, 'config.json'))  # Only once the run can go on.

    # Train: `step` counts the steps done; validation, a checkpoint and the early-stopping count every `eval_every`.
    rng = jax.random.wrap_key_data(np.asarray(progress.rng, np.uint32))
    step, evals_since_best = progress.step, progress.evals_since_best
    stopped_early = _patience_spent(tc, evals_since_best, step, total_steps)
    compile_seconds, speeds, interval = None, [], _Interval()
    train_start = time.perf_counter()
    bar = tqdm(total=total_steps, initial=step, desc='train', unit='step', file=sys.stderr, mininterval=2.0)
    try:
      while step < total_steps and not stopped_early:
        batch, resident = setup.feed(step)
        state, step_metrics = setup.train_step(state, batch, rng, step, resident)
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
          fetched, images_per_sec = interval.fetch()
          _check_finite(fetched, ckpts)
          row = _log_row(fetched, setup.schedule, images_per_sec)
          writer.write(step, row)
          if images_per_sec is not None:
            speeds.append(images_per_sec)
          bar.set_postfix(loss=f'{row["train_loss"]:.4f}', img_s=f'{images_per_sec or 0:.0f}')

        if itstime(step, eval_every, total_steps):
          network = task.network(setup.model_graphdef, state[0])
          val = task.validate(*network, data.splits['val'], mesh)
          writer.write(step, val)
          if not all(np.isfinite(v) for v in val.values()):  # Never saved: it would be resumed from.
            raise diverged(f'the validation at step {step} is not finite ({val})', ckpts)
          score = val[task.best_metric] if task.best_mode == 'max' else -val[task.best_metric]
          evals_since_best = 0 if score > _best_score(ckpts, task) else evals_since_best + 1  # Before the save.
          epoch, batch_in_epoch = divmod(step, setup.steps_per_epoch)
          where = dict(
            train_examples=len(train), train_fingerprint=train.fingerprint, epoch=epoch, batch_in_epoch=batch_in_epoch
          )
          meta = Progress(rng=progress.rng, step=step, evals_since_best=evals_since_best, data=where)
          ckpts.save(step, state_lib.to_checkpoint(state), dataclasses.asdict(meta), metrics=val)
          if on_checkpoint is not None:
            ckpts.wait()  # Only a finished checkpoint is worth persisting.
            on_checkpoint(step)
          task.on_evaluation(*network, step, workdir)  # After the save: a failure here loses nothing.
          tqdm.write(f'step {step}: ' + ', '.join(f'{k} {v:.4f}' for k, v in val.items()), file=sys.stderr)
          interval.restart_clock()  # Validation time is not training throughput.
          if stopped_early := _patience_spent(tc, evals_since_best, step, total_steps):
            tqdm.write(f'early stop: no better {task.best_metric} for {tc.patience} evaluations', file=sys.stderr)
    finally:  # Never leave an async save half-written.
      bar.close()
      writer.close()
      ckpts.wait()
      best_step = ckpts.best_step()
      best = ckpts.metrics(best_step)[task.best_metric] if best_step is not None else None
      ckpts.close()
    train_seconds = time.perf_counter() - train_start
    setup = state = resident = None  # Frees the devices' copy of the training split before the test set is evaluated.

    # Test: the best checkpoint's network on the test split.
    graphdef, model_state, best_step = state_lib.restore_model(workdir, task)
    report = task.evaluate(
      *task.network(graphdef, model_state), data.splits['test'], mesh, name='test', step=best_step, workdir=workdir
    )
    writers.write_report(report, workdir)
    plots.plot_curves(writer.path, os.path.join(workdir, 'curves.png'))
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
      images_per_sec=round(float(np.median(speeds)), 1) if speeds else None,  # This command's steps.
      skipped_images={name: len(split.skipped) for name, split in data.splits.items()},
      devices=mesh.size,
      platform=jax.default_backend(),
      compute_dtype=str(models.compute_dtype(config.model.dtype)),  # What 'auto' became here.
    )
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
