"""A classifier judged on a split: accuracy, balanced accuracy, loss, and the full report (per class, confusion).

An evaluator takes a predict function `predict(images, sizes) -> logits` (uint8 cache canvases and their
picture sizes in, float32 logits out) and the data; `predictor` makes that function for a classifier network,
through the eval transform of validation (`predict_arrays`, which `Classifier` uses too).
"""

from __future__ import annotations

import functools
from collections.abc import Callable

import jax
import numpy as np
import optax
from flax import nnx

from tinycats import metrics, sharding
from tinycats.data import augment

Predict = Callable[[np.ndarray, np.ndarray], np.ndarray]


@functools.lru_cache(maxsize=8)
def _predict_fn(image_size: int, crop_fraction: float, norm: str, graphdef, mesh):
  """The jitted eval-mode forward pass for uint8 cache canvases and their picture sizes: (logits, pooled features)."""

  def predict(state, images, sizes):
    model = nnx.merge(graphdef, state)
    model.eval()
    features = model.features(
      augment.eval_transform(images, sizes, image_size=image_size, crop_fraction=crop_fraction, norm=norm)
    )
    return model.fc(features), features

  batch = sharding.batch_sharding(mesh)
  return jax.jit(
    predict, in_shardings=(sharding.replicated(mesh), batch, batch), out_shardings=sharding.replicated(mesh)
  )


def predict_arrays(
  config, graphdef, model_state, images: np.ndarray, sizes: np.ndarray, mesh, batch_size: int | None = None
) -> tuple[np.ndarray, np.ndarray]:
  """float32 (logits, penultimate features) for uint8 (N, S, S, 3) canvases and picture sizes (N, 2), in batches."""
  data = config.data
  fn = _predict_fn(data.image_size, augment.eval_crop(data), data.normalization, graphdef, mesh)
  return sharding.run_batched(
    fn, model_state, (images, np.asarray(sizes, np.int32)), batch_size or config.train.eval_batch_size, mesh
  )


def predictor(config, graphdef, model_state, mesh, batch_size: int | None = None) -> Predict:
  """The predict function of a classifier network: float32 logits for uint8 canvases (N, S, S, 3), sizes (N, 2)."""
  return lambda images, sizes: predict_arrays(config, graphdef, model_state, images, sizes, mesh, batch_size)[0]


def validate(predict: Predict, split, num_classes: int) -> dict[str, float]:
  """What every evaluation of a training run records: val_accuracy, val_balanced_accuracy, val_loss."""
  logits = predict(split.images, split.sizes)
  loss = optax.softmax_cross_entropy_with_integer_labels(logits, split.labels).mean()
  predictions = logits.argmax(-1)
  return {
    'val_accuracy': float(np.mean(predictions == split.labels)),
    'val_balanced_accuracy': metrics.balanced_accuracy(split.labels, predictions, num_classes),
    'val_loss': float(loss),
  }


def report(predict: Predict, split, classes: list[str]) -> dict:
  """The full evaluation of a split (what eval.json holds): `metrics.classification_report` of its predictions."""
  logits = predict(split.images, split.sizes)
  return metrics.classification_report(split.labels, logits.argmax(-1), classes)
