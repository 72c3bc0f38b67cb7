"""The pictures a run leaves in its workdir: training curves, the confusion matrix, grids of images (PNG).

Drawn without pyplot and written atomically, by process 0 only (`writers.writes_files`).
"""

from __future__ import annotations

import os

import numpy as np
from matplotlib.figure import Figure
from PIL import Image, ImageDraw

from tinycats import files, writers


def _figure(**kwargs):
  """A figure drawn without pyplot: no global backend switch (a notebook's inline plots keep working)."""
  return Figure(**kwargs)


def plot_confusion(confusion, classes, path: str, title: str = '') -> None:
  if not writers.writes_files():
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


def plot_curves(metrics_path: str, path: str) -> None:
  """Train and validation curves against step from metrics.jsonl: loss, and the accuracies when the task has them."""
  if not writers.writes_files():
    return
  rows = writers.read_jsonl(metrics_path)
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
  if not writers.writes_files():
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
