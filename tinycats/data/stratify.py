"""Seeded train/val/test partitions stratified by class, and class-balanced caps on a split.

Validation chooses the best checkpoint by balanced accuracy (mean per-class recall), so every class
needs enough validation images: with 3 images of a class its recall moves in steps of 1/3, and a
model that ignores the class can tie one that learns it.
"""

from __future__ import annotations

import warnings
from collections.abc import Callable

import numpy as np


def split_indices(
  labels, seed: int, val_fraction: float, test_fraction: float = 0.0, val_min_per_class: int = 0
) -> dict[str, np.ndarray]:
  """A seeded train/val/test partition of range(len(labels)), stratified by class (each part sorted).

  A class of n images gives round(n * test_fraction) to test and max(round(n * val_fraction),
  val_min_per_class) to val, the extra taken from its training images, but never more than half of
  what test leaves it: the floor must not take a small class out of training.
  """
  labels = np.asarray(labels)
  rng = np.random.default_rng(seed)
  parts = {'train': [], 'val': [], 'test': []}
  for label in np.unique(labels):
    members = rng.permutation(np.flatnonzero(labels == label))
    n = len(members)
    n_test = round(n * test_fraction)
    n_val = max(round(n * val_fraction), min(val_min_per_class, (n - n_test) // 2))
    parts['val'].append(members[:n_val])
    parts['test'].append(members[n_val : n_val + n_test])
    parts['train'].append(members[n_val + n_test :])
  return {name: np.sort(np.concatenate(chosen)) for name, chosen in parts.items()}


def limit(
  indices: np.ndarray, labels_of: Callable[[], np.ndarray], max_examples: int, seed: int, min_per_class: int = 0
) -> np.ndarray:
  """At most `max_examples` of `indices` (sorted, seeded), each class in proportion to its share.

  `labels_of()` returns the labels of `indices`; it is called only when the cap applies (a TFDS
  source reads every record for them). Each class keeps at least `min_per_class` of its images
  even above the cap, so a capped validation split keeps its per-class floor.
  """
  if not max_examples or len(indices) <= max_examples:
    return indices
  labels = np.asarray(labels_of())
  classes, counts = np.unique(labels, return_counts=True)
  floor = np.minimum(counts, min_per_class)
  rest = counts - floor
  share = max(max_examples - floor.sum(), 0) * rest / max(rest.sum(), 1)
  quota = floor + np.floor(share).astype(np.int64)
  # Largest remainders first, so the quotas add up to the cap exactly.
  quota[np.argsort(np.floor(share) - share, kind='stable')[: max(max_examples - quota.sum(), 0)]] += 1
  rng = np.random.default_rng(seed)
  chosen = [rng.permutation(indices[labels == c])[:q] for c, q in zip(classes, quota)]
  return np.sort(np.concatenate(chosen))


def warn_if_few(labels: np.ndarray, classes: list[str], min_per_class: int) -> list[str]:
  """Warns (once) when validation holds fewer than `min_per_class` images of a class; returns those classes."""
  counts = np.bincount(np.asarray(labels, np.int64), minlength=len(classes))
  few = [f'{classes[i]} ({counts[i]})' for i in np.flatnonzero(counts < min_per_class)]
  if few:
    shown = ', '.join(few[:8]) + (f' and {len(few) - 8} more' if len(few) > 8 else '')
    warnings.warn(
      f'the validation split holds fewer than data.val_min_per_class={min_per_class} images of {shown}: '
      'too few to choose the best checkpoint well (a class gives validation at most half of its '
      'non-test images); add images of these classes',
      UserWarning,
      stacklevel=3,
    )
  return few
