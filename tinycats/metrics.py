"""Classification metrics and the files a run leaves in its workdir (JSON, metrics.jsonl, curves.png, confusion.png)."""

from __future__ import annotations

import importlib.util
import json
import os
import sys

import jax
import numpy as np
from matplotlib.figure import Figure
from PIL import Image, ImageDraw

from tinycats import files


def writes_files() -> bool:
  """Whether this process writes a run's files: in a multi-process run all compute, process 0 writes."""
  return jax.process_index() == 0


def balanced_accuracy(labels: np.ndarray, predictions: np.ndarray, num_classes: int) -> float:
  """Mean per-class recall over the classes present in `labels`: answering one class for everything scores 1/K
  (K classes present), where plain accuracy would give it the majority's share."""
  labels, predictions = np.asarray(labels, np.int64), np.asarray(predictions, np.int64)
  support = np.bincount(labels, minlength=num_classes)
  hits = np.bincount(labels[predictions == labels], minlength=num_classes)
  present = support > 0
  return float(np.mean(hits[present] / support[present])) if present.any() else 0.0


def classification_report(labels: np.ndarray, predictions: np.ndarray, classes: list[str]) -> dict:
  """accuracy, balanced accuracy, per-class recall (also inside per_class, with precision/f1/support), the
  confusion matrix (rows: true, columns: predicted), and `degenerate`: what a model that answers one class
  for a split holding several says, else None."""
  k = len(classes)
  confusion = np.zeros((k, k), np.int64)
  np.add.at(confusion, (labels, predictions), 1)
  true_pos = np.diag(confusion).astype(np.float64)
  predicted, actual = confusion.sum(0), confusion.sum(1)
  precision = np.divide(true_pos, predicted, out=np.zeros(k), where=predicted > 0)
  recall = np.divide(true_pos, actual, out=np.zeros(k), where=actual > 0)
  f1 = np.divide(2 * precision * recall, precision + recall, out=np.zeros(k), where=(precision + recall) > 0)
  per_class = {
    name: dict(precision=float(precision[i]), recall=float(recall[i]), f1=float(f1[i]), support=int(actual[i]))
    for i, name in enumerate(classes)
  }
  answered = np.flatnonzero(predicted)
  degenerate = (
    f'predicts only "{classes[answered[0]]}" for all {len(labels)} images'
    if len(answered) == 1 and np.count_nonzero(actual) > 1
    else None
  )
  return dict(
    accuracy=float(true_pos.sum() / max(len(labels), 1)),
    balanced_accuracy=balanced_accuracy(labels, predictions, k),
    classes=list(classes),
    recall={name: float(recall[i]) for i, name in enumerate(classes)},
    per_class=per_class,
    confusion_matrix=confusion.tolist(),
    num_examples=int(len(labels)),
    degenerate=degenerate,
  )


def _figure(**kwargs):
  """A figure drawn without pyplot: no global backend switch (a notebook's inline plots keep working)."""
  return Figure(**kwargs)


def plot_confusion(confusion, classes, path: str, title: str = '') -> None:
  if not writes_files():
    return
  confusion = np.asarray(confusion)
  size = max(4.0, 0.3 * len(classes) + 2)
  fig = _figure(figsize=(size, size))
  ax = fig.subplots()
  ax.imshow(confusion, cmap='Blues')
  ax.set_xticks(range(len(classes)), classes, rotation=90, fontsize=7 if len(classes) > 10 else 10)
  ax.set_yticks(range(len(classes)), classes, fontsize=7 if len(classes) > 10 else 10)
  ax.set_xlabel('predicted')
  ax.set_ylabel('true')
  if len(classes) <= 12:
    for (i, j), v in np.ndenumerate(confusion):
      ax.text(j, i, str(v), ha='center', va='center', color='white' if v > confusion.max() / 2 else 'black')
  ax.set_title(title)
  fig.tight_layout()
  _save_figure(fig, path)


def _save_figure(fig, path: str) -> None:
  with files.atomic_write(path, 'wb') as f:  # Never through a link planted at `path`.
    fig.savefig(f, format='png', dpi=100)


def write_json(obj, path: str) -> None:
  """Writes JSON through a temporary file and a rename: a reader never sees half a file, a link is not followed."""
  if not writes_files():
    return
  with files.atomic_write(path) as f:
    json.dump(obj, f, indent=2, sort_keys=True)


def report_file(split: str, kind: str = 'eval', extension: str = 'json') -> str:
  """A split's own file: `eval.json` and `confusion.png` for the test split (what training writes and a Hub card
  reports), `eval_val.json`, `confusion_train.png`, ... for the others, so that no split overwrites another's."""
  return f'{kind}.{extension}' if split == 'test' else f'{kind}_{split}.{extension}'


def write_report(report: dict, workdir: str) -> None:
  """Writes an evaluation's report as its split's file (`report_file`), warning when the model answers one class
  for everything."""
  write_json(report, os.path.join(workdir, report_file(report['split'])))
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


def plot_curves(metrics_path: str, path: str) -> None:
  """Train and validation curves against step from metrics.jsonl: loss, and the accuracies when the task has them."""
  if not writes_files():
    return
  rows = read_jsonl(metrics_path)
  names = [
    name
    for name in ('loss', 'accuracy', 'balanced_accuracy')
    if any(p + name in r for r in rows for p in ('train_', 'val_'))
  ]
  fig = _figure(figsize=(5 * max(len(names), 1), 4))
  axes = fig.subplots(1, max(len(names), 1), squeeze=False)
  for ax, name in zip(axes[0], names):
    for prefix, style in (('train_', '-'), ('val_', 'o-')):
      points = [(r['step'], r[prefix + name]) for r in rows if prefix + name in r]
      if points:
        ax.plot(*zip(*points), style, label=prefix.rstrip('_'))
    ax.set_xlabel('step')
    ax.set_title(name)
    ax.legend()
  fig.tight_layout()
  _save_figure(fig, path)


def save_grid(images: np.ndarray, path: str, row_labels: list[str] | None = None, gap: int = 2) -> None:
  """Writes uint8 images (rows, cols, H, W, 3) as one PNG, a label left of each row (atomically)."""
  if not writes_files():
    return
  rows, cols, h, w, _ = images.shape
  margin = 8 * max((len(label) for label in row_labels or ()), default=0) + (gap if row_labels else 0)
  canvas = Image.new('RGB', (margin + cols * (w + gap) + gap, rows * (h + gap) + gap), 'white')
  draw = ImageDraw.Draw(canvas)
  for r in range(rows):
    top = gap + r * (h + gap)
    if row_labels:
      draw.text((gap, top + h // 2 - 5), row_labels[r], fill='black')
    for c in range(cols):
      canvas.paste(Image.fromarray(images[r, c]), (margin + gap + c * (w + gap), top))
  os.makedirs(os.path.dirname(os.path.abspath(path)), exist_ok=True)
  with files.atomic_write(path, 'wb') as f:
    canvas.save(f, format='PNG')


def frechet_distance(a: np.ndarray, b: np.ndarray, weights_a: np.ndarray | None = None) -> float:
  """Fréchet distance between Gaussians fitted to two feature sets (N, D): FID's formula in any feature space.

  `weights_a` weighs a's examples in its mean and covariance (e.g. to balance its classes).

  |mu_a - mu_b|^2 + tr(S_a + S_b - 2 (S_a S_b)^1/2), with the trace of the square root taken from
  the eigenvalues of S_a^1/2 S_b S_a^1/2 (symmetric, so it stays real and stable when N < D).
  """
  a, b = np.asarray(a, np.float64), np.asarray(b, np.float64)
  mu_a, mu_b = np.average(a, axis=0, weights=weights_a), b.mean(0)
  cov_a, cov_b = np.cov(a, rowvar=False, aweights=weights_a), np.cov(b, rowvar=False)
  vals, vecs = np.linalg.eigh(cov_a)
  root_a = (vecs * np.sqrt(np.clip(vals, 0, None))) @ vecs.T
  cross = np.linalg.eigvalsh(root_a @ cov_b @ root_a)
  trace_root = np.sqrt(np.clip(cross, 0, None)).sum()
  distance = np.sum((mu_a - mu_b) ** 2) + np.trace(cov_a) + np.trace(cov_b) - 2 * trace_root
  return float(max(distance, 0.0))  # Never below 0 but by rounding.
