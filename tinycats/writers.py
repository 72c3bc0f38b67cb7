"""The files a run leaves in its workdir as data: JSON (config, reports, summary), `metrics.jsonl` and the
evaluation report of each split. Every write is atomic and never follows a link; in a multi-process run
only process 0 writes.
"""

from __future__ import annotations

import importlib.util
import json
import os
import sys

import jax

from tinycats import files


def writes_files() -> bool:
  """Whether this process writes a run's files: in a multi-process run all compute, process 0 writes."""
  return jax.process_index() == 0


def write_json(obj, path: str) -> None:
  """Writes JSON through a temporary file and a rename: a reader never sees half a file, a link is not followed."""
  if not writes_files():
    return
  with files.atomic_write(path) as f:
    json.dump(obj, f, indent=2, sort_keys=True)


def report_file(split: str, kind: str = 'eval', extension: str = 'json', step: int | None = None) -> str:
  """A split's own file: `eval.json` and `confusion.png` for the test split (what training writes and a Hub card
  reports), `eval_val.json`, `confusion_train.png`, ... for the others, so that no split overwrites another's;
  a checkpoint asked for by number (`step`, not the best) adds `_stepN`: `eval_step2400.json`."""
  name = kind if split == 'test' else f'{kind}_{split}'
  return f'{name}{"" if step is None else f"_step{step}"}.{extension}'


def report_path(report: dict, workdir: str, kind: str = 'eval', extension: str = 'json') -> str:
  """Where `report`'s file of `kind` goes: `report_file` of its split, and of its step when it is not the best's."""
  step = report['step'] if report.get('checkpoint') == 'chosen' else None
  return os.path.join(workdir, report_file(report['split'], kind, extension, step))


def write_report(report: dict, workdir: str) -> None:
  """Writes an evaluation's report as its split's file (`report_file`), warning when the model answers one class
  for everything."""
  write_json(report, report_path(report, workdir))
  if report.get('degenerate') and writes_files():
    print(
      f'warning: the checkpoint at step {report["step"]} of {workdir} {report["degenerate"]} of the '
      f'{report["split"]} split',
      file=sys.stderr,
    )


class MetricWriter:
  """A run's scalars by step: appended to `metrics.jsonl`, and to TensorBoard when tensorboardX is installed.

  `resume_step`: the step a resumed run continues from; rows logged after it are dropped (they will be
  logged again). Without it the file starts empty. Only process 0 writes.
  """

  def __init__(self, path: str, resume_step: int | None = None):
    self.path = path
    self._tensorboard = None
    if not writes_files():
      return
    files.refuse_links(os.path.dirname(path), [os.path.basename(path)])
    if resume_step is None:
      if os.path.exists(path):
        os.remove(path)
    else:
      rows = [r for r in read_jsonl(path) if r['step'] <= resume_step]
      with files.atomic_write(path) as f:
        f.writelines(json.dumps(r) + '\n' for r in rows)
    if importlib.util.find_spec('tensorboardX') is not None:  # Optional: never a dependency.
      from tensorboardX import SummaryWriter  # pylint: disable=import-outside-toplevel

      self._tensorboard = SummaryWriter(os.path.join(os.path.dirname(path), 'tensorboard'))

  def write(self, step: int, scalars: dict[str, float]) -> None:
    if not writes_files():
      return
    files.append_line(self.path, json.dumps({'step': step, **scalars}) + '\n')
    if self._tensorboard is not None:
      for name, value in scalars.items():
        self._tensorboard.add_scalar(name, value, step)

  def rows(self) -> list[dict]:
    return read_jsonl(self.path)

  def close(self) -> None:
    if self._tensorboard is not None:
      self._tensorboard.close()


def read_jsonl(path: str) -> list[dict]:
  if not os.path.isfile(path):
    return []
  with open(path) as f:
    return [json.loads(line) for line in f if line.strip()]
