"""The diversity figure of `evaluators.samples.judge_samples`: per class, generated spread over real spread."""

import numpy as np
import pytest

from tinycats.evaluators.samples import blockiness, diversity, judge_samples, mean_pairwise_distance

CLASSES = ['a', 'b', 'c']


class PixelJudge:
  """A stand-in judge whose features are the pictures' own values (so a test places them where it likes)."""

  classes = CLASSES

  def embed(self, images):
    features = images.reshape(len(images), -1).astype(np.float32)
    probs = np.full((len(images), len(self.classes)), 1.0 / len(self.classes), np.float32)
    return probs, features


def pictures(rng, centres, per_class, spread):
  """uint8 (N, 2, 2, 3) pictures: class i's values are centres[i] plus noise of std `spread`; and their labels."""
  labels = np.repeat(np.arange(len(centres)), per_class)
  values = np.asarray(centres, np.float64)[labels, None] + rng.normal(0, spread, (len(labels), 12))
  return np.clip(np.round(values), 0, 255).astype(np.uint8).reshape(-1, 2, 2, 3), labels


def test_mean_pairwise_distance_is_the_mean_over_pairs():
  x = np.asarray([[0.0, 0.0], [3.0, 4.0], [6.0, 8.0]])
  assert mean_pairwise_distance(x) == pytest.approx((5 + 10 + 5) / 3)
  rng = np.random.default_rng(0)
  y = rng.normal(size=(30, 7)) * 50 + 1000  # Far from the origin: the Gram formula still holds.
  brute = np.mean([np.linalg.norm(y[i] - y[j]) for i in range(30) for j in range(i + 1, 30)])
  assert mean_pairwise_distance(y) == pytest.approx(brute, rel=1e-9)
  assert mean_pairwise_distance(y[:1]) is None and mean_pairwise_distance(y[:0]) is None


def test_identical_copies_have_no_diversity():
  rng = np.random.default_rng(0)
  real, real_labels = pictures(rng, [60, 120, 180], 20, 15)
  copies = np.repeat(real[[0, 20, 40]], 10, axis=0)  # One real picture of each class, ten times.
  out = judge_samples(PixelJudge(), real, real_labels, copies, np.repeat(np.arange(3), 10), CLASSES)
  assert out['diversity'] == pytest.approx(0.0, abs=1e-6)
  assert set(out['per_class_diversity']) == set(CLASSES)
  assert all(v == pytest.approx(0.0, abs=1e-6) for v in out['per_class_diversity'].values())


def test_samples_like_the_real_ones_score_about_one():
  rng = np.random.default_rng(0)
  real, real_labels = pictures(rng, [60, 120, 180], 100, 15)
  samples, labels = pictures(rng, [60, 120, 180], 100, 15)  # Other draws from the same distribution.
  out = judge_samples(PixelJudge(), real, real_labels, samples, labels, CLASSES)
  assert out['diversity'] == pytest.approx(1.0, abs=0.05)
  assert all(v == pytest.approx(1.0, abs=0.1) for v in out['per_class_diversity'].values())
  half, _ = pictures(rng, [60, 120, 180], 100, 7.5)  # Half the spread: about half the diversity.
  assert judge_samples(PixelJudge(), real, real_labels, half, labels, CLASSES)['diversity'] == pytest.approx(
    0.5, abs=0.05
  )


def test_diversity_is_per_class_not_over_the_pooled_set():
  """A generator that draws one picture per class has no variety, though its classes lie far apart."""
  rng = np.random.default_rng(0)
  real, real_labels = pictures(rng, [30, 130, 230], 20, 10)
  features = real.reshape(len(real), -1).astype(np.float64)
  one_each = np.repeat(features[[0, 20, 40]], 10, axis=0)  # Collapsed: one picture per class.
  labels = np.repeat(np.arange(3), 10)
  mean, per_class = diversity(features, real_labels, one_each, labels, CLASSES)
  assert mean == pytest.approx(0.0, abs=1e-6)
  pooled = mean_pairwise_distance(one_each) / mean_pairwise_distance(features)
  assert pooled > 0.5  # Pooled, the distance between classes would pass for variety.


def test_classes_without_two_pictures_get_no_figure():
  rng = np.random.default_rng(0)
  real, real_labels = pictures(rng, [60, 120, 180], 10, 15)
  features = real.reshape(len(real), -1).astype(np.float64)
  samples = features[[0, 1, 10, 20, 21]]  # One sample of class b.
  labels = np.asarray([0, 0, 1, 2, 2])
  mean, per_class = diversity(features, real_labels, samples, labels, CLASSES)
  assert set(per_class) == {'a', 'c'} and mean == pytest.approx(np.mean(list(per_class.values())))
  one_real = real_labels.copy()
  one_real[real_labels == 2] = 0
  one_real[20] = 2  # Only one real picture of class c: no scale to compare with.
  assert set(diversity(features, one_real, samples, labels, CLASSES)[1]) == {'a'}
  assert diversity(features, real_labels, samples[:1], labels[:1], CLASSES) == (None, {})


def test_blockiness_is_one_without_a_grid_and_high_for_tiles_that_do_not_meet():
  rng = np.random.default_rng(0)
  smooth = np.cumsum(rng.normal(size=(4, 32, 32, 3)), axis=2)  # Random walks: no grid at all.
  assert blockiness(smooth, 8) == pytest.approx(1.0, abs=0.15)
  tiles = np.repeat(np.repeat(rng.uniform(0, 255, (4, 4, 4, 3)), 8, axis=1), 8, axis=2)  # One colour per patch.
  assert blockiness(tiles + smooth, 8) > 3
  assert blockiness(tiles + smooth, 4) < blockiness(tiles + smooth, 8)  # Half the steps sit on a 4-px border.
  assert blockiness(smooth, 1) is None and blockiness(smooth[:, :8, :8], 8) is None
