"""The one training loop. A task (classify, flow) plugs in its model, loss and validation.

Per step: a deterministic batch (`feed.py`: an epoch permutation seeded by (seed, epoch), gathered on
the device when the split fits there), a key folded from
the run's RNG by step, one jitted donated update. Metrics stay on the device until a log
step fetches them all at once (one host sync per `log_every` steps), which is also where a
non-finite loss is caught. Validation and a checkpoint follow every `eval_every` steps. Because
batches and keys are functions of the step alone, a run restarted on its workdir resumes from
the latest checkpoint and ends exactly where an uninterrupted run would.
"""
from __future__ import annotations

import copy
import json
import math
import os
import sys
import time

import jax
import numpy as np
from flax import nnx
from tqdm import tqdm

import tinycats.data
from tinycats import config as config_lib, evaluate, metrics, models, pretrained
from tinycats.train import feed as feed_lib, state as state_lib, step as step_lib
from tinycats.errors import UserError
from tinycats.train.tasks import TASKS


class TrainingDiverged(UserError):
  """The loss became NaN or infinite; the last good checkpoint is kept, and a gentler setting resumes."""


def _append_jsonl(path: str, row: dict) -> None:
  if not metrics.writes_files():
    return
  with open(path, 'a') as f:
    f.write(json.dumps(row) + '\n')


def _truncate_metrics(path: str, step: int) -> None:
  """On resume, drop rows logged after the checkpoint we continue from (they will be logged again)."""
  if not metrics.writes_files():
    return
  rows = [r for r in metrics.read_jsonl(path) if r['step'] <= step]
  with open(path, 'w') as f:
    f.writelines(json.dumps(r) + '\n' for r in rows)


def train_and_evaluate(config, workdir: str, mesh=None, on_checkpoint=None) -> dict:
  """Trains `config` in `workdir` (resuming if it holds checkpoints), then evaluates on the test split.

  `on_checkpoint(step)` runs once each checkpoint is fully written (Modal commits its volume there).
  """
  config = config_lib.validate(copy.deepcopy(config))  # The class names get recorded in this copy.
  os.makedirs(workdir, exist_ok=True)
  mesh = mesh or step_lib.make_mesh()
  tc = config.train
  if tc.batch_size % (mesh.size * tc.get('grad_accum', 1)):
    raise config_lib.ConfigError(f'train.batch_size ({tc.batch_size}) must be a multiple of the device count '
                                 f'({mesh.size}) times train.grad_accum: every (micro-)batch is split evenly over devices')

  # Pretrained weights are found (or downloaded) before any other work, so a bad source fails at once.
  weights = pretrained.fetch(pretrained.resolve(config.model)) if config.model.get('pretrained') else None
  data = tinycats.data.load(config)
  config.data.classes = tuple(data.classes)
  train, val_split = data.splits['train'], data.splits['val']
  if len(train) < tc.batch_size:
    raise config_lib.ConfigError(f'train.batch_size ({tc.batch_size}) exceeds the {len(train)} training images')
  skipped = {name: len(split.skipped) for name, split in data.splits.items()}

  task = TASKS[config.task](config, data.classes)
  steps_per_epoch = len(train) // tc.batch_size
  total_steps = tc.get('steps', 0) or tc.epochs * steps_per_epoch  # A fixed budget, else whole epochs.
  eval_every = tc.eval_every or steps_per_epoch
  ckpts = state_lib.checkpoints(workdir, task, keep=tc.keep_checkpoints)
  model, optimizer, schedule = state_lib.create(task, config, steps_per_epoch, total_steps)
  if weights and ckpts.latest_step() is None:  # A resumed run has its weights in the checkpoint.
    pretrained.load_torchvision(model, weights)
  graphdef, state = nnx.split((model, optimizer))
  model_graphdef = nnx.graphdef(model)
  del model, optimizer

  # 'best' is kept as higher-is-better (a loss is negated), so one comparison serves every task.
  sign = 1.0 if task.best_mode == 'max' else -1.0
  progress = dict(step=0, best=-math.inf, best_step=None, evals_since_best=0,
                  rng=np.asarray(jax.random.key_data(jax.random.key(config.seed))).tolist())
  metrics_path = os.path.join(workdir, 'metrics.jsonl')
  config_path = os.path.join(workdir, 'config.json')
  if (latest := ckpts.latest_step()) is not None:
    if os.path.isfile(config_path) and (conflicts := config_lib.resume_conflicts(config_lib.load_json(config_path),
                                                                                  config)):
      raise config_lib.ConfigError(
          f'{workdir} holds a run with other settings, which cannot be resumed with these:\n  ' +
          '\n  '.join(conflicts) + '\nUse the settings in its config.json, or a fresh --workdir.')
    stored, progress = ckpts.restore(latest, state_lib.to_checkpoint(state))
    state = state_lib.from_checkpoint(state, stored)
    if progress['data']['train_examples'] != len(train):  # Same config, but the images changed.
      raise config_lib.ConfigError(
          f"{workdir} was trained on {progress['data']['train_examples']} training images, the data now has "
          f'{len(train)}, so its data position cannot be resumed. Restore the data, or use a fresh --workdir.')
    _truncate_metrics(metrics_path, progress['step'])
    print(f'resuming from step {progress["step"]} ({ckpts.directory})', file=sys.stderr)
  elif os.path.exists(metrics_path) and metrics.writes_files():
    os.remove(metrics_path)
  config_lib.save_json(config, config_path)  # Only once the run can go on.

  state = jax.device_put(state, step_lib.replicated(mesh))
  train_step = step_lib.for_task(task, graphdef, mesh)
  feed = feed_lib.Feed(train, mesh, batch_size=tc.batch_size, steps_per_epoch=steps_per_epoch, seed=config.seed,
                       device_cache_gb=config.data.get('device_cache_gb', 0))  # A config older than the field: host.
  rng = jax.random.wrap_key_data(np.asarray(progress['rng'], np.uint32))
  step = progress['step']
  stopped_early = bool(tc.patience) and progress['evals_since_best'] >= tc.patience and step < total_steps
  compile_seconds = None
  pending = []  # (step, device metrics) since the last log.
  interval_start, interval_images = time.perf_counter(), 0
  train_start = time.perf_counter()

  def flush():
    """Fetches pending metrics (one host sync), checks them, logs their mean."""
    nonlocal pending, interval_start, interval_images
    if not pending:
      return
    fetched = jax.device_get([m for _, m in pending])
    for (s, _), m in zip(pending, fetched):
      if not np.isfinite(m['loss']):
        ckpts.wait()
        last = ckpts.latest_step()
        raise TrainingDiverged(
            f'loss became {m["loss"]} at step {s + 1}; stopped. The last good checkpoint is '
            f'{"step " + str(last) if last is not None else "none"} in {ckpts.directory}. '
            'Lower train.learning_rate or keep train.grad_clip on, then run again (it resumes from there).')
    elapsed = time.perf_counter() - interval_start
    row = {'step': pending[-1][0] + 1, 'learning_rate': float(schedule(pending[-1][0]))}
    if interval_images:
      row['images_per_sec'] = interval_images / max(elapsed, 1e-9)
    for key in fetched[0]:
      row[('train_' if key in ('loss', 'accuracy') else '') + key] = float(np.mean([m[key] for m in fetched]))
    _append_jsonl(metrics_path, row)
    bar.set_postfix(loss=f'{row["train_loss"]:.4f}', img_s=f'{row.get("images_per_sec", 0):.0f}')
    pending, interval_start, interval_images = [], time.perf_counter(), 0

  bar = tqdm(total=total_steps, initial=step, desc='train', unit='step', file=sys.stderr, mininterval=2.0)
  try:
    while step < total_steps and not stopped_early:
      batch, resident = feed(step)
      state, step_metrics = train_step(state, batch, rng, step, resident)
      pending.append((step, step_metrics))
      step += 1
      bar.update(1)
      if compile_seconds is None:  # One sync after the first step: compilation is not throughput.
        jax.block_until_ready(step_metrics)
        compile_seconds = time.perf_counter() - interval_start
        interval_start = time.perf_counter()
      else:
        interval_images += tc.batch_size
      if step % tc.log_every == 0 or step % eval_every == 0 or step == total_steps:
        flush()
      if step % eval_every == 0 or step == total_steps:
        val = task.validate(model_graphdef, state[0], val_split, mesh)
        _append_jsonl(metrics_path, {'step': step, **val})
        score = sign * val[task.best_metric]
        if score > progress['best']:
          progress.update(best=score, evals_since_best=0)
        else:
          progress['evals_since_best'] += 1
        if score >= progress['best']:  # Orbax's best checkpoint is the latest of equal scores; so is ours.
          progress['best_step'] = step
        epoch, batch_in_epoch = divmod(step, steps_per_epoch)
        progress.update(step=step, data=dict(train_examples=len(train), epoch=epoch, batch_in_epoch=batch_in_epoch))
        ckpts.save(step, state_lib.to_checkpoint(state), dict(progress), metrics=val)
        if on_checkpoint is not None:
          ckpts.wait()  # Only a finished checkpoint is worth persisting.
          on_checkpoint(step)
        task.on_evaluation(model_graphdef, state[0], step, workdir)  # After the save: a failure here loses nothing.
        tqdm.write(f'step {step}: ' + ', '.join(f'{k} {v:.4f}' for k, v in val.items()), file=sys.stderr)
        interval_start = time.perf_counter()  # Validation time is not training throughput.
        if tc.patience and progress['evals_since_best'] >= tc.patience and step < total_steps:
          tqdm.write(f'early stop: no better {task.best_metric} for {tc.patience} evaluations', file=sys.stderr)
          stopped_early = True
  finally:  # Never leave an async save half-written.
    bar.close()
    ckpts.wait()
    ckpts.close()
  train_seconds = time.perf_counter() - train_start
  feed = resident = None  # Frees the devices' copy of the training split before the test set is evaluated.

  report = evaluate.evaluate(workdir, split='test', config=config, data=data, mesh=mesh)
  metrics.plot_curves(metrics_path, os.path.join(workdir, 'curves.png'))
  logged = metrics.read_jsonl(metrics_path)
  speeds = [r['images_per_sec'] for r in logged if 'images_per_sec' in r]
  summary = dict(workdir=os.path.abspath(workdir), steps=step, total_steps=total_steps, stopped_early=stopped_early,
                 best_step=progress['best_step'], best=sign * progress['best'], metric=task.best_metric,
                 **{f'test_{k}': report[k] for k in task.summary_metrics}, train_seconds=round(train_seconds, 1),
                 compile_seconds=round(compile_seconds or 0.0, 1),
                 images_per_sec=round(float(np.median(speeds)), 1) if speeds else None, skipped_images=skipped,
                 devices=mesh.size, platform=jax.default_backend(),
                 compute_dtype=str(models.compute_dtype(config.model.dtype)))  # What 'auto' became here.
  metrics.write_json(summary, os.path.join(workdir, 'summary.json'))
  return summary

