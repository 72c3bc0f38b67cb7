"""The shape-only data: its labels are carried by shape, never by colour, size or framing."""

import os

import numpy as np
import pytest
from PIL import Image

from tinycats.data import shapes


def _features(names, per_class, style, seed=0, tint=None):
  """Colour statistics and labels of `per_class` pictures of each name; `tint[k]` is blended into class k."""
  rng = np.random.default_rng(seed)
  x, y = [], []
  for _ in range(per_class):
    for k, name in enumerate(names):
      image = shapes.render(rng, name, style)
      if tint is not None:
        image = (0.7 * image + 0.3 * tint[k]).astype(np.uint8)
      x.append(shapes.colour_statistics(image))
      y.append(k)
  x, y = np.asarray(x), np.asarray(y)
  half = len(x) // 2
  return x[:half], y[:half], x[half:], y[half:]


@pytest.mark.parametrize(
  'names, style, ceiling',
  [
    (shapes.SHAPES, shapes.HARD, 0.2),  # Chance 0.1; 200 test pictures.
    (shapes.SHAPES, shapes.EASY, 0.2),
    (shapes.SHAPES, shapes.FLAT, 0.2),
    (shapes.SHAPES, shapes.CENTRED, 0.2),
    (shapes.PETS, shapes.HARD, 0.64),  # Chance 0.5; 120 test pictures.
  ],
)
def test_colour_statistics_do_not_tell_the_classes_apart(names, style, ceiling):
  accuracy = shapes.colour_probe_accuracy(*_features(names, 40 if len(names) > 2 else 120, style))
  assert accuracy <= ceiling


def test_the_colour_probe_finds_a_colour_that_follows_the_class():
  """The same probe on the same pictures, tinted per class: colour now leaks, and the probe sees it."""
  tint = np.random.default_rng(1).uniform(0, 255, (len(shapes.SHAPES), 3))
  assert shapes.colour_probe_accuracy(*_features(shapes.SHAPES, 40, shapes.HARD, tint=tint)) >= 0.35  # Chance 0.1.


def test_pictures_vary_in_size_and_aspect_and_repeat_with_the_seed():
  sizes = [shapes.render(np.random.default_rng(i), 'star').shape for i in range(40)]
  aspects = np.asarray([w / h for h, w, _ in sizes])
  assert all(len(s) == 3 and s[2] == 3 for s in sizes)
  assert np.mean((aspects < 0.9) | (aspects > 1.1)) > 0.5  # Most are not square.
  np.testing.assert_array_equal(
    shapes.render(np.random.default_rng(3), 'heart'), shapes.render(np.random.default_rng(3), 'heart')
  )
  assert shapes.render(np.random.default_rng(0), 'cat', size=(30, 50)).shape == (30, 50, 3)


def test_the_mask_comes_with_the_same_picture_and_covers_the_object():
  for i, (name, style) in enumerate([('star', shapes.HARD), ('ring', shapes.EASY), ('cat', shapes.FLAT)]):
    image, mask = shapes.render(np.random.default_rng(i), name, style, with_mask=True)
    np.testing.assert_array_equal(image, shapes.render(np.random.default_rng(i), name, style))  # Bit for bit.
    assert mask.shape == image.shape[:2] and mask.dtype == np.float32 and 0 <= mask.min() and mask.max() <= 1
    low, high = style.area
    assert 0.7 * low < mask.mean() < 1.3 * high  # The drawn area (the hole cut out of a ring, clipped at an edge).
    if style is shapes.FLAT:  # One colour on another: the mask is where the object's colour is.
      inside, outside = image[mask > 0.99].mean(0), image[mask < 0.01].mean(0)
      assert np.abs(inside - outside).sum() > 60


def test_spread_bounds_how_far_from_the_centre_the_object_sits():
  """spread=1 puts the object anywhere it fits; spread=0 at the centre; the same draws either way."""

  def offsets(spread):
    style = shapes.dataclasses.replace(shapes.FLAT, spread=spread, rotation=0.0)
    out = []
    for i in range(30):
      mask = shapes._mask(np.random.default_rng(i), 'square', 48, 48, style)
      ys, xs = np.nonzero(mask > 0.5)
      out.append(max(abs(xs.mean() - 23.5), abs(ys.mean() - 23.5)))
    return np.asarray(out)

  assert offsets(0.0).max() < 1.0
  assert offsets(1.0).max() > 6.0
  assert offsets(0.5).max() < offsets(1.0).max()


def test_the_object_covers_the_same_share_of_the_picture_in_every_class():
  """Area is drawn per picture from one range: a count of object pixels says nothing of the class."""
  style = shapes.HARD
  for name in shapes.SHAPES + shapes.PETS:
    rng = np.random.default_rng(0)
    covered = [shapes._mask(rng, name, 60, 80, style).mean() for _ in range(20)]
    assert style.area[0] * 0.8 <= min(covered) and max(covered) <= style.area[1] * 1.2, name


def test_make_folder_writes_the_folder_layout(tmp_path):
  paths = shapes.make_folder(str(tmp_path), classes=3, per_class=2, style=shapes.EASY)
  assert sorted(os.listdir(tmp_path)) == ['circle', 'ring', 'triangle']
  assert all(len(v) == 2 for v in paths.values())
  with Image.open(paths['ring'][0]) as image:
    assert image.mode == 'RGB' and min(image.size) >= 8


def test_unknown_shape_is_named():
  with pytest.raises(ValueError, match="unknown shape 'blob'"):
    shapes.render(np.random.default_rng(0), 'blob')


def test_the_command_writes_a_folder_and_names_unknown_classes(tmp_path, capsys):
  shapes.main([str(tmp_path / 'out'), '--classes', 'cat,dog', '--per-class', '2', '--style', 'hard'])
  assert sorted(os.listdir(tmp_path / 'out')) == ['cat', 'dog'] and '4 pictures of 2 classes' in capsys.readouterr().out
  with pytest.raises(SystemExit) as exit_info:
    shapes.main([str(tmp_path / 'bad'), '--classes', 'cat,blob'])
  assert exit_info.value.code == 2 and "unknown classes ['blob']" in capsys.readouterr().err
