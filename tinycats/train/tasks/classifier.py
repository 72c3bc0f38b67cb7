"""The classifier task: what the one training loop needs to train and judge a classifier.

It supplies the model and its ImageNet-pretrained weights, the head/backbone parameter groups,
the loss (augmentation included, so it runs on the device inside the jitted step), the
validation metrics and the full report (eval.json, with confusion.png beside it).
"""

from __future__ import annotations

import jax
import jax.numpy as jnp
import optax
from flax import nnx

from tinycats import models, plots, pretrained, writers
from tinycats.data import augment
from tinycats.evaluators import classification
from tinycats.train.tasks.base import Task


def head_or_backbone(params):
  """'head' for the classification layer (`fc`), 'backbone' for everything else."""
  first_key = lambda path: getattr(path[0], 'key', getattr(path[0], 'name', None))
  return jax.tree_util.tree_map_with_path(lambda path, _: 'head' if first_key(path) == 'fc' else 'backbone', params)


class ClassifierTask(Task):
  # Balanced accuracy (mean per-class recall) chooses the best checkpoint: a model that answers one class
  # for everything scores 1/K, where plain accuracy gives it the majority class's share of the split.
  best_metric = 'val_balanced_accuracy'
  summary_metrics = ('accuracy', 'balanced_accuracy')
  param_groups = staticmethod(head_or_backbone)

  @property
  def fine_tuning(self) -> bool:
    """From pretrained weights: the backbone's rate is scaled and frozen at first (`train.make_optimizer`)."""
    return bool(self.config.model.get('pretrained'))

  def create_model(self, seed: int) -> nnx.Module:
    return models.create_classifier(self.config.model, len(self.classes), seed=seed)

  @staticmethod
  def fetch_weights(config):
    return pretrained.fetch(pretrained.resolve(config.model)) if config.model.get('pretrained') else None

  def init_weights(self, model, weights) -> None:
    if weights:
      pretrained.load_torchvision(model, weights)

  def loss(self, model, batch, key):
    data = self.config.data
    k_aug, k_drop = jax.random.split(key)
    x = augment.train_transform(
      batch['image'],
      batch['size'],
      k_aug,
      image_size=data.image_size,
      min_scale=data.crop_min_scale,
      flip=data.flip,
      color_jitter=data.color_jitter,
      recolor=data.get('recolor', 0.0),
      norm=data.normalization,
    )
    logits = model(x, rngs=nnx.Rngs(dropout=k_drop))
    targets = optax.smooth_labels(jax.nn.one_hot(batch['label'], len(self.classes)), self.config.train.label_smoothing)
    loss = optax.softmax_cross_entropy(logits, targets).mean()
    accuracy = jnp.mean(jnp.argmax(logits, -1) == batch['label'])
    return loss, {'accuracy': accuracy}

  def validate(self, graphdef, model_state, split, mesh) -> dict[str, float]:
    predict = classification.predictor(self.config, graphdef, model_state, mesh)
    return classification.validate(predict, split, len(self.classes))

  def report(self, graphdef, model_state, split, mesh) -> dict:
    """The full evaluation of a split: what `eval.json` holds."""
    predict = classification.predictor(self.config, graphdef, model_state, mesh)
    return classification.report(predict, split, self.classes)

  def plot_report(self, report: dict, workdir: str) -> None:
    plots.plot_confusion(
      report['confusion_matrix'],
      report['classes'],
      writers.report_path(report, workdir, 'confusion', 'png'),
      title=f'{report["split"]}: accuracy {report["accuracy"]:.4f} (step {report["step"]})',
    )
