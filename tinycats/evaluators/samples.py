"""Generated images judged by a trained classifier (`judge_samples`): the `samples` numbers in a generator's eval.json.

- conditional accuracy: the classifier, shown a sample of label y, predicts y. A classifier
  trained on other label sets is mapped onto the generator's labels: a 37-breed classifier's
  dog breeds count as 'other'; a cat/other classifier gives the species accuracy and the cat
  rate (the fraction of cat-breed samples it calls 'cat').
- Fréchet distance between real and generated images in the classifier's penultimate features.
  Samples come in equal numbers per class while a real split need not (Oxford-IIIT Pet is two
  thirds dogs), so the real statistics weigh each class equally: the distance then measures the
  images, not the class mix.
- diversity: per class, the mean pairwise distance between the samples of that class over the
  mean pairwise distance between the real images of that class, averaged over classes (1 is
  as varied as the real pictures, 0 is one picture repeated). It stands beside conditional
  accuracy because strong guidance buys accuracy with variety: a generator that draws one
  perfect picture per class scores full accuracy and diversity 0. See `diversity`.
- blockiness (given the generator's patch size): the mean absolute difference between neighbouring pixels
  across patch borders over that between neighbours inside a patch. Real pictures score about 1; a
  transformer whose tokens each draw their own patch shows its patch grid as a higher figure. See `blockiness`.

Every number is also computed for real images of the same split (`real_images`: as the generator
learnt them), so a reader sees what a perfect generator would score under this classifier. The judge is
any object with `classes` and `embed(images) -> (probabilities, features)`, such as a `Classifier`.
"""

from __future__ import annotations

import numpy as np

from tinycats import metrics
from tinycats.data import augment, pets
from tinycats.errors import UserError


def _species_of(classes: list[str]) -> np.ndarray:
  """0 (cat) or 1 (other) for each generator class: 'other' and dog breeds are 'other'."""
  return np.asarray([1 if name == 'other' or (name in pets.BREEDS and name[0].islower()) else 0 for name in classes])


def label_map(generator_classes: list[str], classifier_classes: list[str]) -> tuple[str, np.ndarray]:
  """(kind, table): table[classifier prediction] is comparable with `target(kind, generator label)`.

  kind 'class': the prediction maps onto a generator class; kind 'species': onto cat (0) / other (1).
  """
  generator_classes, classifier_classes = list(generator_classes), list(classifier_classes)
  pet_labels = all(c in pets.BREEDS or c == 'other' for c in generator_classes)
  if classifier_classes == list(pets.SPECIES) and pet_labels:  # Cat or other: only for the Pets' own labels.
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


def mean_pairwise_distance(features: np.ndarray) -> float | None:
  """The mean Euclidean distance over all pairs i < j of the rows of `features` (N, D); None when N < 2.

  From the Gram matrix of the centred rows (|a|^2 + |b|^2 - 2 a.b, in float64): O(N^2) memory, not O(N^2 D).
  """
  if len(features) < 2:
    return None
  x = np.asarray(features, np.float64).reshape(len(features), -1)
  x = x - x.mean(0)  # Centred: smaller norms, less cancellation in the Gram formula.
  norms = np.einsum('nd,nd->n', x, x)
  squared = norms[:, None] + norms[None, :] - 2.0 * (x @ x.T)
  upper = np.triu_indices(len(x), k=1)
  return float(np.sqrt(np.clip(squared[upper], 0.0, None)).mean())


def diversity(
  real_features: np.ndarray,
  real_labels: np.ndarray,
  features: np.ndarray,
  labels: np.ndarray,
  classes: list[str],
) -> tuple[float | None, dict[str, float]]:
  """(the mean over classes, {class: figure}): per class, the mean pairwise distance of the generated
  features of that class over that of the real features of that class.

  Per class, never over the pooled set: pooled, the distance between two classes' pictures would count
  as variety, and a generator drawing one picture per class would still score well. A class with
  fewer than 2 samples or real images (or real images all alike) gets no figure; the mean is over the
  classes that have one (None if none has). The real set's own figure is 1 by construction, so none is
  reported for it.

  The distance space is the judge classifier's penultimate features (the ones the Fréchet distance
  uses), for both sets: there two pictures are far apart when they differ in what the judge has
  learned to look at (outline, pose, scale). Pixel distance on the shape pictures would mostly measure
  the random colours and grounds, which a generator can vary while drawing one outline.
  """
  real_features, features = np.asarray(real_features), np.asarray(features)
  real_labels, labels = np.asarray(real_labels), np.asarray(labels)
  per_class = {}
  for i, name in enumerate(classes):
    generated = mean_pairwise_distance(features[labels == i])
    real = mean_pairwise_distance(real_features[real_labels == i])
    if generated is not None and real:  # `real` 0 or None: no scale to measure against.
      per_class[name] = generated / real
  return (float(np.mean(list(per_class.values()))) if per_class else None), per_class


def blockiness(images: np.ndarray, patch_size: int) -> float | None:
  """Mean |difference| of horizontally and vertically neighbouring pixels that straddle a border of the
  `patch_size` grid, over that of neighbours inside a patch, for (N, H, W, C) images. About 1 for pictures
  that know nothing of the grid; a sample made of per-patch tiles that do not meet scores higher (steps at
  the borders, smooth insides). None where there is no border or no inside (patch size 1, or one patch)."""
  x = np.asarray(images, np.float32)
  if patch_size < 2 or x.shape[1] <= patch_size or x.shape[2] <= patch_size:
    return None
  per_offset = np.abs(np.diff(x, axis=2)).mean(axis=(0, 1, 3)) + np.abs(np.diff(x, axis=1)).mean(axis=(0, 2, 3))
  border = np.arange(len(per_offset)) % patch_size == patch_size - 1  # Pixel j and j + 1 in different patches.
  inside = per_offset[~border].mean()
  return float(per_offset[border].mean() / inside) if inside > 0 else None


def judge_samples(
  classifier,
  real_images: np.ndarray,
  real_labels: np.ndarray,
  images: np.ndarray,
  labels: np.ndarray,
  classes: list[str],
  patch_size: int | None = None,
) -> dict:
  """Scores `images` (uint8, with the `labels` they were asked for) against real images under `classifier`:
  accuracy, Fréchet distance and diversity (`diversity`), all in the classifier's terms; with `patch_size`,
  the blockiness (`blockiness`) of both sets too."""
  generated, generated_features = _judge(classifier, images, labels, classes)
  real, real_features = _judge(classifier, real_images, real_labels, classes)
  counts = np.bincount(real_labels, minlength=len(classes)).astype(np.float64)
  asked = np.bincount(labels, minlength=len(classes)) > 0  # Classes absent from the samples get no weight.
  weights = np.where(asked[real_labels], 1.0 / np.maximum(counts[real_labels], 1), 0.0)
  distance = metrics.frechet_distance(real_features, generated_features, weights_a=weights)
  mean_diversity, per_class_diversity = diversity(real_features, real_labels, generated_features, labels, classes)
  if patch_size:
    generated['blockiness'] = blockiness(images, patch_size)
    real['blockiness'] = blockiness(real_images, patch_size)
  return dict(
    generated,
    frechet_distance=distance,
    diversity=mean_diversity,
    per_class_diversity=per_class_diversity,
    num_generated=int(len(images)),
    num_real=int(len(real_images)),
    real=real,
    classifier_classes=list(classifier.classes),
  )


def real_images(config, split, batch: int = 256) -> np.ndarray:
  """The split's real images as the generator of run `config` learnt them (its transform, unflipped), as uint8
  pixels: what the judge's real-image numbers are computed on."""
  d = config.data
  return np.concatenate(
    [
      augment.to_uint8(
        augment.flip_transform(
          split.images[i : i + batch],
          split.sizes[i : i + batch],
          None,
          image_size=d.image_size,
          crop_fraction=augment.eval_crop(d),
          flip=False,
          norm=d.normalization,
        ),
        d.normalization,
      )
      for i in range(0, len(split), batch)
    ]
  )
