"""The decoded cache, the image-folder source and the on-device augmentations."""
import os

import jax
import jax.numpy as jnp
import numpy as np
import pytest
from PIL import Image

import fake_pets
import tinycats.data
from conftest import tiny_config
from tinycats.data import augment, cache, folder, stratify


def _loaders(images):
  return [lambda image=image, i=i: (image, {'label': i % 2}) for i, image in enumerate(images)]


def test_cache_skips_and_counts_bad_images_and_is_reused(tmp_path):
  rng = np.random.default_rng(0)
  images = [rng.integers(0, 255, (30 + i, 40, 3), dtype=np.uint8) for i in range(5)]
  loaders = _loaders(images)
  loaders[2] = lambda: (_ for _ in ()).throw(OSError('truncated file'))
  key = dict(source='test', split='train', size=16)
  with pytest.warns(UserWarning, match='skipping unreadable image b.jpg: OSError: truncated file'):
    built = cache.get_or_build(str(tmp_path), key, ['a.jpg', 'c.jpg', 'b.jpg', 'd.jpg', 'e.jpg'], loaders)
  assert built.images.shape == (4, 16, 16, 3) and built.images.dtype == np.uint8
  assert built.skipped == ['b.jpg'] and built.names == ['a.jpg', 'c.jpg', 'd.jpg', 'e.jpg']
  np.testing.assert_array_equal(built.labels['label'], [0, 1, 1, 0])
  np.testing.assert_array_equal(built.images[1], cache.to_square(images[1], 16))

  exploding = [lambda: pytest.fail('a cached split must not be decoded again')] * 5
  again = cache.get_or_build(str(tmp_path), key, ['a.jpg', 'c.jpg', 'b.jpg', 'd.jpg', 'e.jpg'], exploding)
  np.testing.assert_array_equal(again.images, built.images)
  assert again.skipped == ['b.jpg']


def test_cache_build_that_fails_leaves_nothing(tmp_path):
  def broken():
    raise ValueError('bad')
  with pytest.warns(UserWarning), pytest.raises(ValueError, match='no readable images'):
    cache.get_or_build(str(tmp_path), dict(source='x', split='y', size=8), ['a', 'b'], [broken, broken])
  assert os.listdir(tmp_path) == []


def test_to_square_keeps_the_centre_and_handles_modes():
  image = np.zeros((40, 80, 3), np.uint8)
  image[:, 20:60] = 255  # The central square is white.
  square = cache.to_square(image, 20)
  assert square.shape == (20, 20, 3) and square[:, 1:-1].min() > 240  # Edge columns blend (antialiasing).
  gray = Image.fromarray(np.full((10, 30), 7, np.uint8))
  rgba = Image.fromarray(np.full((30, 10, 4), 9, np.uint8))
  assert cache.to_square(gray, 8).shape == cache.to_square(rgba, 8).shape == (8, 8, 3)


def test_folder_listing_and_seeded_split(tmp_path):
  fake_pets.make_image_folder(str(tmp_path), classes=('cat', 'other'), per_class=10, size=16)
  (tmp_path / 'cat' / 'readme.txt').write_text('not an image')
  classes, files, labels = folder.list_images(str(tmp_path))
  assert classes == ['cat', 'other'] and len(files) == 20 and labels.tolist() == [0] * 10 + [1] * 10
  with pytest.raises(FileNotFoundError, match='ROOT/<class>/<image>'):
    folder.list_images(str(tmp_path / 'missing'))


def test_split_is_stratified_and_gives_validation_a_floor_per_class():
  labels = np.array([0] * 300 + [1] * 40 + [2] * 5)
  parts = stratify.split_indices(labels, seed=3, val_fraction=0.1, test_fraction=0.1, val_min_per_class=10)
  count = lambda part: np.bincount(labels[parts[part]], minlength=3).tolist()
  # 10% of 300; 10% of 40 is 4, raised to the floor; 5 images give at most half of what test leaves (5 // 2).
  assert count('val') == [30, 10, 2]
  assert count('test') == [30, 4, 0] and count('train') == [240, 26, 3]
  assert sorted(np.concatenate(list(parts.values())).tolist()) == list(range(len(labels)))
  again = stratify.split_indices(labels, 3, 0.1, 0.1, 10)
  assert all(again[k].tolist() == parts[k].tolist() for k in parts)  # Seeded.
  assert stratify.split_indices(labels, 4, 0.1, 0.1, 10)['val'].tolist() != parts['val'].tolist()
  without = stratify.split_indices(labels, 3, 0.1, 0.1)
  assert np.bincount(labels[without['val']], minlength=3).tolist() == [30, 4, 0]


def test_max_examples_keeps_classes_in_proportion_and_the_validation_floor(tmp_path):
  fake_pets.make_image_folder(str(tmp_path), per_class=40, size=8)
  config = tiny_config('--config.data.source=folder', f'--config.data.folder={tmp_path}',
                       '--config.data.max_examples=8')
  data = tinycats.data.load(config)
  count = lambda name: np.bincount(data.splits[name].labels, minlength=2).tolist()
  assert count('train') == count('test') == [4, 4]  # Not the first 8 of a class-ordered listing: one class.
  assert count('val') == [10, 10]  # data.val_min_per_class holds above the cap.
  # Proportional, not equal: a class with 3x the images keeps 3x the share.
  labels = np.array([0] * 30 + [1] * 10)
  capped = stratify.limit(np.arange(40), lambda: labels, 8, seed=0)
  assert np.bincount(labels[capped]).tolist() == [6, 2]


def test_a_class_too_small_for_the_validation_floor_is_warned_about(tmp_path):
  paths = fake_pets.make_image_folder(str(tmp_path), per_class=30, size=8)
  for path in paths['other'][4:]:
    os.remove(path)
  config = tiny_config('--config.data.source=folder', f'--config.data.folder={tmp_path}')
  with pytest.warns(UserWarning, match=r'fewer than data\.val_min_per_class=10 images of other \(2\): too few'):
    data = tinycats.data.load(config)
  assert np.bincount(data.splits['val'].labels).tolist() == [10, 2]  # 4 images: 2 stay in training.


def test_the_cache_notices_changed_images(tmp_path):
  root = tmp_path / 'images'
  fake_pets.make_image_folder(str(root), per_class=10, size=16)
  config = tiny_config('--config.data.source=folder', f'--config.data.folder={root}', f'--config.data.cache_dir={tmp_path / "c"}')
  before = np.asarray(tinycats.data.load(config).splits['train'].images).copy()
  for path in (root / 'cat').iterdir():
    Image.new('RGB', (16, 16), (255, 0, 0)).save(path, format='JPEG')
    os.utime(path, (1, 1))  # A different modification time, as any edit gives.
  after = np.asarray(tinycats.data.load(config).splits['train'].images)
  assert not np.array_equal(before, after)


def test_load_folder_splits(tmp_path):
  fake_pets.make_image_folder(str(tmp_path), per_class=10, size=24)
  config = tiny_config('--config.data.source=folder', f'--config.data.folder={tmp_path}',
                       '--config.data.val_min_per_class=0')  # Fractions alone: 10% of 10 per class.
  data = tinycats.data.load(config)
  assert data.classes == ['cat', 'other']
  assert {k: len(v) for k, v in data.splits.items()} == {'train': 16, 'val': 2, 'test': 2}
  assert data.splits['train'].images.shape[1:] == (36, 36, 3)


def test_crop_boxes_and_the_central_eval_crop():
  images = jnp.asarray(np.random.default_rng(0).integers(0, 255, (2, 36, 36, 3), dtype=np.uint8))
  x = images[0].astype(jnp.float32) / 255
  # A box of the output size is an exact slice (a sign error in the offset would move it).
  np.testing.assert_allclose(augment._crop_resize(x, 4.0, 2.0, 32.0, 32.0, 32), x[4:36, 2:34], atol=1e-5)
  # Evaluation is torchvision's centre crop of the cached square, without resampling.
  np.testing.assert_allclose(augment.eval_transform(images, image_size=32, norm='none')[0], x[2:34, 2:34], atol=1e-6)
  # A box twice the output size is downsampled with antialiasing: a 2x2 checkerboard averages to grey.
  checker = (np.indices((32, 32)).sum(0) % 2).astype(np.float32)[..., None].repeat(3, -1)
  half = augment._crop_resize(jnp.asarray(checker), 0.0, 0.0, 32.0, 32.0, 16)
  np.testing.assert_allclose(half[1:-1, 1:-1], 0.5, atol=1e-5)  # The border pixels see a truncated kernel.


def test_random_boxes_respect_area_and_aspect_bounds():
  keys = jax.random.split(jax.random.key(0), 2000)
  top, left, height, width = jax.vmap(lambda k: augment._random_box(k, 100, 0.35))(keys)
  area = np.asarray(height * width) / 100**2
  assert area.min() >= 0.35 * 0.99 and area.max() <= 1.0 + 1e-6
  assert (np.asarray(top) >= 0).all() and (np.asarray(top + height) <= 100 + 1e-4).all()
  assert (np.asarray(left) >= 0).all() and (np.asarray(left + width) <= 100 + 1e-4).all()
  ratio = np.asarray(width / height)[area < 0.5]  # Small boxes are never clipped by the image.
  assert ratio.min() >= 0.75 - 1e-4 and ratio.max() <= 4 / 3 + 1e-4


def test_color_jitter_factors_stay_in_range():
  grey = jnp.full((64, 8, 8, 3), 0.5)
  out = jax.vmap(lambda k, x: augment._color_jitter(k, x, 0.2))(jax.random.split(jax.random.key(0), 64), grey)
  brightness = np.asarray(out.mean((1, 2, 3))) / 0.5  # Contrast and saturation leave flat grey alone.
  assert brightness.min() >= 0.8 - 1e-5 and brightness.max() <= 1.2 + 1e-5 and brightness.std() > 0.05


def test_train_transform_shapes_ranges_and_determinism():
  images = jnp.asarray(np.random.default_rng(0).integers(0, 255, (4, 36, 36, 3), dtype=np.uint8))
  fn = jax.jit(lambda im, key: augment.train_transform(im, key, image_size=32, color_jitter=0.3, norm='none'))
  a, b = fn(images, jax.random.key(0)), fn(images, jax.random.key(0))
  assert a.shape == (4, 32, 32, 3) and a.dtype == jnp.float32
  np.testing.assert_array_equal(a, b)
  assert float(a.min()) >= 0 and float(a.max()) <= 1
  assert not np.allclose(a, fn(images, jax.random.key(1)))


def test_flip_mirrors_about_half_of_the_images():
  images = jnp.zeros((32, 16, 16, 3), jnp.uint8).at[:, :, 8:].set(255)  # Black left half, white right half.
  flips = lambda on: augment.train_transform(images, jax.random.key(0), image_size=16, min_scale=0.99, flip=on,
                                             norm='none')
  mirrored = lambda out: np.asarray(out[:, :, :8].mean((1, 2, 3)) > out[:, :, 8:].mean((1, 2, 3)))
  assert not mirrored(flips(False)).any()
  assert 8 <= mirrored(flips(True)).sum() <= 24


def test_imagenet_normalisation():
  white = jnp.full((1, 4, 4, 3), 255, jnp.uint8)
  out = augment.eval_transform(white, image_size=4, norm='imagenet')
  np.testing.assert_allclose(out[0, 0, 0], (1 - np.array(augment.IMAGENET_MEAN)) / np.array(augment.IMAGENET_STD),
                             rtol=1e-5)
