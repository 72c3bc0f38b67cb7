"""The numbers a run is judged by: classification metrics and the Fréchet distance of two feature sets.

Plain numpy, no files: `writers.py` writes them, `plots.py` draws them.
"""

from __future__ import annotations

import numpy as np


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


def calibration(labels: np.ndarray, probs: np.ndarray, bins: int = 10) -> dict:
  """How far confidence is from accuracy: the reliability diagram's bins and the expected calibration error.

  Each prediction falls in the bin of its confidence (top probability; `bins` equal widths over [0, 1]).
  Returns `ece` (the bins' |accuracy - confidence| weighed by their share of predictions) and, per bin,
  `edges` (bins + 1), `confidence` and `accuracy` (NaN where the bin is empty) and `count`.
  """
  probs, labels = np.asarray(probs, np.float64), np.asarray(labels, np.int64)
  confidence, correct = probs.max(-1), (probs.argmax(-1) == labels).astype(np.float64)
  edges = np.linspace(0.0, 1.0, bins + 1)
  which = np.clip(np.digitize(confidence, edges[1:-1], right=True), 0, bins - 1)  # (lo, hi], the first [0, hi].
  count = np.bincount(which, minlength=bins)
  with np.errstate(invalid='ignore', divide='ignore'):
    mean_confidence = np.bincount(which, confidence, bins) / count
    accuracy = np.bincount(which, correct, bins) / count
  gaps = np.where(count > 0, np.abs(accuracy - mean_confidence), 0.0)
  return dict(
    ece=float(np.sum(gaps * count) / max(len(labels), 1)),
    edges=edges.tolist(),
    confidence=mean_confidence.tolist(),
    accuracy=accuracy.tolist(),
    count=count.tolist(),
  )


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
