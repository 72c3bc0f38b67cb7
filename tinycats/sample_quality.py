"""How good generated images are, judged by a trained classifier: the numbers in a generator's eval.json.

- conditional accuracy: the classifier, shown a sample of label y, predicts y. A classifier
  trained on other label sets is mapped onto the generator's labels: a 37-breed classifier's
  dog breeds count as 'other'; a cat/other classifier gives the species accuracy and the cat
  rate (the fraction of cat-breed samples it calls 'cat').
- Fréchet distance between real and generated images in the classifier's penultimate features.
  Samples come in equal numbers per class while a real split need not (Oxford-IIIT Pet is two
  thirds dogs), so the real statistics weigh each class equally: the distance then measures the
  images, not the class mix.

Every number is also computed for real images of the same split, so a reader sees what a
perfect generator would score under this classifier.
"""

from __future__ import annotations

import numpy as np

from tinycats import metrics
from tinycats.data import pets
from tinycats.errors import UserError


def _species_of(classes: list[str]) -> np.ndarray:
  """0 (cat) or 1 (other) for each generator class: 'other' and dog breeds are 'other'."""
  return np.asarray([1 if name == 'other' or (name in pets.BREEDS and name[0].islower()) else 0 for name in classes])


def label_map(generator_classes: list[str], classifier_classes: list[str]) -> tuple[str, np.ndarray]:
  """(kind, table): table[classifier prediction] is comparable with `target(kind, generator label)`.

  kind 'class': the prediction maps onto a generator class; kind 'species': onto cat (0) / other (1).
  """
  generator_classes, classifier_classes = list(generator_classes), list(classifier_classes)
  if classifier_classes == list(pets.SPECIES):
    return 'species', np.arange(2)
  if all(c in generator_classes or (c in pets.BREEDS and 'other' in generator_classes) for c in classifier_classes):
    return 'class', np.asarray(
      [generator_classes.index(c if c in generator_classes else 'other') for c in classifier_classes]
    )
  raise UserError(
    f"the classifier predicts {classifier_classes}, which cannot be matched with the generator's "
    f'classes {generator_classes}; use a classifier trained on the same labels, on all 37 breeds, or '
    'on cat/other'
  )


def _judge(classifier, images: np.ndarray, labels: np.ndarray, classes: list[str]) -> tuple[dict, np.ndarray]:
  """Accuracy-type numbers for one set of images, and its features."""
  kind, table = label_map(classes, classifier.classes)
  probs, features = classifier.embed(images)
  predicted = table[probs.argmax(-1)]
  out = {}
  if kind == 'class':
    correct = predicted == labels
    out['conditional_accuracy'] = float(correct.mean())
    out['per_class_accuracy'] = {
      name: float(correct[labels == i].mean()) for i, name in enumerate(classes) if np.any(labels == i)
    }
  else:
    species = _species_of(classes)[labels]
    out['species_accuracy'] = float(np.mean(predicted == species))
    if np.any(species == 0):
      out['cat_rate'] = float(np.mean(predicted[species == 0] == 0))  # Cat-breed samples called 'cat'.
    if np.any(species == 1):
      out['other_rate'] = float(np.mean(predicted[species == 1] == 1))
  return out, features


def sample_quality(
  classifier,
  real_images: np.ndarray,
  real_labels: np.ndarray,
  images: np.ndarray,
  labels: np.ndarray,
  classes: list[str],
) -> dict:
  """Scores `images` (uint8, with the `labels` they were asked for) against real images under `classifier`."""
  generated, generated_features = _judge(classifier, images, labels, classes)
  real, real_features = _judge(classifier, real_images, real_labels, classes)
  counts = np.bincount(real_labels, minlength=len(classes)).astype(np.float64)
  asked = np.bincount(labels, minlength=len(classes)) > 0  # Classes absent from the samples get no weight.
  weights = np.where(asked[real_labels], 1.0 / np.maximum(counts[real_labels], 1), 0.0)
  distance = metrics.frechet_distance(real_features, generated_features, weights_a=weights)
  return dict(
    generated,
    frechet_distance=distance,
    num_generated=int(len(images)),
    num_real=int(len(real_images)),
    real=real,
    classifier_classes=list(classifier.classes),
  )
