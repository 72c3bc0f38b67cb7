"""Image-folder source: `ROOT/<class>/<image>`, one sub-folder per class (class names sorted)."""

from __future__ import annotations

import os

import numpy as np

from tinycats.errors import UserError

IMAGE_EXTENSIONS = ('.jpg', '.jpeg', '.png', '.bmp', '.gif', '.webp')


def list_images(root: str) -> tuple[list[str], list[str], np.ndarray]:
  """Returns (classes, files, labels); files are sorted so the listing is reproducible."""
  if not os.path.isdir(root):
    raise FileNotFoundError(
      f'image folder {root!r} not found; data.source=folder expects ROOT/<class>/<image> '
      '(e.g. data/cats/cat/*.jpg and data/cats/other/*.jpg)'
    )
  classes = sorted(d for d in os.listdir(root) if os.path.isdir(os.path.join(root, d)) and not d.startswith('.'))
  files, labels = [], []
  for index, name in enumerate(classes):
    found = sorted(
      f for f in os.listdir(os.path.join(root, name)) if f.lower().endswith(IMAGE_EXTENSIONS) and not f.startswith('.')
    )
    files += [os.path.join(root, name, f) for f in found]
    labels += [index] * len(found)
  counts = np.bincount(np.asarray(labels, np.int64), minlength=len(classes))
  if len(classes) < 2 or not counts.all():
    raise UserError(
      f'image folder {root!r} needs at least two class sub-folders, each holding images '
      f'({", ".join(IMAGE_EXTENSIONS)}); found ' + (', '.join(f'{c} ({n})' for c, n in zip(classes, counts)) or 'none')
    )
  return classes, files, np.asarray(labels, np.int32)
