"""The decoded cache, the image-folder source and the on-device augmentations."""

import os

import fake_pets
import jax
import jax.numpy as jnp
import numpy as np
import pytest
from conftest import tiny_config
from PIL import Image

import tinycats.data
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
  canvas, size = cache.fit(images[1], 16)
  np.testing.assert_array_equal(built.images[1], canvas)
  # (30 + i) x 40 pictures, longer side 16: 12, 12, 13 and 14 rows (the unreadable third is gone).
  assert built.sizes.dtype == np.int32 and built.sizes.tolist() == [[12, 16], [12, 16], [13, 16], [14, 16]]
  assert tuple(built.sizes[1]) == size

  exploding = [lambda: pytest.fail('a cached split must not be decoded again')] * 5
  again = cache.get_or_build(str(tmp_path), key, ['a.jpg', 'c.jpg', 'b.jpg', 'd.jpg', 'e.jpg'], exploding)
  np.testing.assert_array_equal(again.images, built.images)
  np.testing.assert_array_equal(again.sizes, built.sizes)
  assert again.skipped == ['b.jpg']


def test_a_cache_of_another_format_is_not_reused(tmp_path, monkeypatch):
  key = dict(source='test', split='train', size=8)
  image = np.zeros((4, 8, 3), np.uint8)
  cache.get_or_build(str(tmp_path), key, ['a'], [lambda: (image, {})])
  monkeypatch.setattr(cache, 'FORMAT', cache.FORMAT + 1)
  rebuilt = cache.get_or_build(str(tmp_path), key, ['a'], [lambda: (image + 1, {})])
  assert rebuilt.images.max() == 1 and len(os.listdir(tmp_path)) == 2


def test_cache_build_that_fails_leaves_nothing(tmp_path):
  def broken():
    raise ValueError('bad')

  with pytest.warns(UserWarning), pytest.raises(ValueError, match='no readable images'):
    cache.get_or_build(str(tmp_path), dict(source='x', split='y', size=8), ['a', 'b'], [broken, broken])
  assert os.listdir(tmp_path) == []


def test_fit_keeps_the_whole_picture_and_its_aspect():
  image = np.full((40, 80, 3), 200, np.uint8)
  image[:, :4] = 0  # Dark edges: a centre crop would lose them.
  image[:, -4:] = 0
  canvas, size = cache.fit(image, 20)
  assert canvas.shape == (20, 20, 3) and canvas.dtype == np.uint8 and size == (10, 20)
  assert canvas[10:].max() == 0  # Zero padding below the picture.
  assert canvas[:10, 0].max() < 60 and canvas[:10, -1].max() < 60 and canvas[:10, 5:15].min() == 200
  np.testing.assert_array_equal(canvas[:10], np.asarray(Image.fromarray(image).resize((20, 10), Image.BILINEAR)))
  tall, size = cache.fit(np.full((75, 50, 3), 9, np.uint8), 30)
  assert size == (30, 20) and tall[:, :20].min() == 9 and tall[:, 20:].max() == 0
  small, size = cache.fit(np.full((3, 4, 3), 9, np.uint8), 8)  # Smaller pictures are enlarged to the size.
  assert size == (6, 8)
  gray = Image.fromarray(np.full((10, 30), 7, np.uint8))
  rgba = Image.fromarray(np.concatenate([np.full((30, 10, 3), 9, np.uint8), np.full((30, 10, 1), 255, np.uint8)], -1))
  assert cache.fit(gray, 9)[1] == (3, 9) and cache.fit(rgba, 9)[1] == (9, 3)
  assert cache.fit(gray, 9)[0][:3, :9].min() == 7 and cache.fit(rgba, 9)[0][:9, :3].min() == 9


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
  config = tiny_config(
    '--config.data.source=folder', f'--config.data.folder={tmp_path}', '--config.data.max_examples=8'
  )
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
  config = tiny_config(
    '--config.data.source=folder', f'--config.data.folder={root}', f'--config.data.cache_dir={tmp_path / "c"}'
  )
  split = tinycats.data.load(config).splits['train']
  before, fingerprint = np.asarray(split.images).copy(), split.fingerprint
  for path in root.glob('*/*'):
    os.utime(path, (2, 2))  # Only the times change: a new cache, the same pictures, the same fingerprint.
  assert tinycats.data.load(config).splits['train'].fingerprint == fingerprint
  for path in (root / 'cat').iterdir():
    Image.new('RGB', (16, 16), (255, 0, 0)).save(path, format='JPEG')
    os.utime(path, (1, 1))  # A different modification time, as any edit gives.
  split = tinycats.data.load(config).splits['train']
  assert not np.array_equal(before, np.asarray(split.images)) and split.fingerprint != fingerprint


def test_load_folder_splits(tmp_path):
  fake_pets.make_image_folder(str(tmp_path), per_class=10, size=24)
  config = tiny_config(
    '--config.data.source=folder', f'--config.data.folder={tmp_path}', '--config.data.val_min_per_class=0'
  )  # Fractions alone: 10% of 10 per class.
  data = tinycats.data.load(config)
  assert data.classes == ['cat', 'other']
  assert {k: len(v) for k, v in data.splits.items()} == {'train': 16, 'val': 2, 'test': 2}
  train = data.splits['train']
  assert train.images.shape[1:] == (36, 36, 3) and train.sizes.shape == (16, 2)
  assert (train.sizes.max(1) == 36).all()  # Longer side = data.cache_size.
  h, w = train.sizes[0]
  assert train.image(0).shape == (h, w, 3)


def test_crop_boxes_and_the_central_eval_crop():
  images = jnp.asarray(np.random.default_rng(0).integers(0, 255, (2, 36, 36, 3), dtype=np.uint8))
  x = images[0].astype(jnp.float32) / 255
  # A box of the output size is an exact slice (a sign error in the offset would move it).
  np.testing.assert_allclose(augment._crop_resize(x, 4.0, 2.0, 32.0, 32.0, 32), x[4:36, 2:34], atol=1e-5)
  # Evaluation: the central square of crop_fraction x the shorter side. A 24x36 picture, all of the
  # shorter side, at its own size: columns 6..30, no resampling.
  sizes = np.int32([[24, 36], [32, 36]])
  whole = augment.eval_transform(images, sizes, image_size=24, crop_fraction=1.0, norm='none')
  np.testing.assert_allclose(whole[0], x[:24, 6:30], atol=1e-6)
  # Half of a 32x36 picture's shorter side: the 16 px square at rows 8..24, columns 10..26.
  half = augment.eval_transform(images, sizes, image_size=16, crop_fraction=0.5, norm='none')
  np.testing.assert_allclose(half[1], images[1, 8:24, 10:26].astype(np.float32) / 255, atol=1e-6)
  # Resampled, it is jax.image's antialiased linear resize of that box of the picture.
  box = 0.875 * 32
  scale, offset = 20 / box, jnp.asarray([(32 - box) / 2, (36 - box) / 2])
  expected = jax.image.scale_and_translate(
    images[1, :32].astype(jnp.float32) / 255,
    (20, 20, 3),
    (0, 1),
    jnp.full(2, scale),
    -offset * scale,
    method='linear',
    antialias=True,
  )
  resized = augment.eval_transform(images, sizes, image_size=20, crop_fraction=0.875, norm='none')
  np.testing.assert_allclose(resized[1], expected, atol=1e-5)
  whole_canvas = augment.eval_transform(
    images, np.int32([[36, 36]] * 2), image_size=20, crop_fraction=0.875, norm='none'
  )
  assert not np.allclose(whole_canvas[1], expected, atol=1e-3)  # The sizes are read, not the canvas's shape.
  # A box twice the output size is downsampled with antialiasing: a 2x2 checkerboard averages to grey.
  checker = (np.indices((32, 32)).sum(0) % 2).astype(np.float32)[..., None].repeat(3, -1)
  half = augment._crop_resize(jnp.asarray(checker), 0.0, 0.0, 32.0, 32.0, 16)
  np.testing.assert_allclose(half[1:-1, 1:-1], 0.5, atol=1e-5)  # The border pixels see a truncated kernel.


def test_the_canvas_padding_never_reaches_the_transforms():
  """A picture gives the same pixels on a tight canvas and on a larger one with bright padding."""
  rng = np.random.default_rng(1)
  picture = rng.integers(0, 255, (3, 20, 30, 3), dtype=np.uint8)
  tight = np.zeros((3, 30, 30, 3), np.uint8)
  tight[:, :20] = picture
  padded = np.full((3, 40, 40, 3), 255, np.uint8)
  padded[:, :20, :30] = picture
  sizes = np.tile(np.int32([20, 30]), (3, 1))
  for fn in (
    lambda im: augment.eval_transform(im, sizes, image_size=16, crop_fraction=1.0, norm='none'),
    lambda im: augment.train_transform(im, sizes, jax.random.key(3), image_size=16, min_scale=0.9, norm='none'),
  ):
    np.testing.assert_allclose(fn(jnp.asarray(padded)), fn(jnp.asarray(tight)), atol=1e-5)


def test_random_boxes_respect_area_and_aspect_bounds():
  keys = jax.random.split(jax.random.key(0), 2000)
  top, left, height, width = jax.vmap(lambda k: augment._random_box(k, 100.0, 60.0, 0.35))(keys)
  area = np.asarray(height * width) / (100 * 60)
  assert area.min() >= 0.35 * 0.99 and area.max() <= 1.0 + 1e-6
  assert (np.asarray(top) >= 0).all() and (np.asarray(top + height) <= 100 + 1e-4).all()
  assert (np.asarray(left) >= 0).all() and (np.asarray(left + width) <= 60 + 1e-4).all()
  ratio = np.asarray(width / height)[area < 0.5]  # Small boxes are never clipped by the picture.
  assert ratio.min() >= 0.75 - 1e-4 and ratio.max() <= 4 / 3 + 1e-4
  assert np.asarray(left).max() > 15 and np.asarray(top).max() > 45  # Boxes reach the far sides (at most 20, 60).


def test_training_crops_reach_the_sides_of_a_wide_photo():
  """A 500x375 photo with a red bar at its left edge and a blue one at its right: the old centre
  square (375 wide) never showed them, random resized crops of the whole cached picture often do."""
  photo = np.full((375, 500, 3), 128, np.uint8)
  photo[:, :30] = (255, 0, 0)
  photo[:, -30:] = (0, 0, 255)
  canvas, size = cache.fit(photo, 64)
  assert size == (48, 64)
  images, sizes = jnp.asarray(np.repeat(canvas[None], 128, 0)), np.tile(np.int32(size), (128, 1))
  red = lambda x: np.asarray(((x[..., 0] > 0.8) & (x[..., 1] < 0.2) & (x[..., 2] < 0.2)).any((1, 2)))
  blue = lambda x: np.asarray(((x[..., 2] > 0.8) & (x[..., 0] < 0.2) & (x[..., 1] < 0.2)).any((1, 2)))
  old = augment.eval_transform(images[:1], sizes[:1], image_size=32, crop_fraction=1.0, norm='none')
  assert not red(old).any() and not blue(old).any()  # The central square of the shorter side: to_square's crop.
  crops = augment.train_transform(images, sizes, jax.random.key(0), image_size=32, flip=False, norm='none')
  assert red(crops).mean() > 0.08 and blue(crops).mean() > 0.08, (red(crops).mean(), blue(crops).mean())  # About 0.2.
  assert float(np.asarray(crops).sum(-1).min()) > 0.9  # Red, blue, grey and their blends: no black padding.


def test_color_jitter_factors_stay_in_range():
  grey = jnp.full((64, 8, 8, 3), 0.5)
  out = jax.vmap(lambda k, x: augment._color_jitter(k, x, 0.2))(jax.random.split(jax.random.key(0), 64), grey)
  brightness = np.asarray(out.mean((1, 2, 3))) / 0.5  # Contrast and saturation leave flat grey alone.
  assert brightness.min() >= 0.8 - 1e-5 and brightness.max() <= 1.2 + 1e-5 and brightness.std() > 0.05


def test_train_transform_shapes_ranges_and_determinism():
  images = jnp.asarray(np.random.default_rng(0).integers(0, 255, (4, 36, 36, 3), dtype=np.uint8))
  sizes = np.int32([[36, 36], [27, 36], [36, 20], [10, 12]])
  fn = jax.jit(lambda im, s, key: augment.train_transform(im, s, key, image_size=32, color_jitter=0.3, norm='none'))
  a, b = fn(images, sizes, jax.random.key(0)), fn(images, sizes, jax.random.key(0))
  assert a.shape == (4, 32, 32, 3) and a.dtype == jnp.float32
  np.testing.assert_array_equal(a, b)
  assert float(a.min()) >= 0 and float(a.max()) <= 1
  assert not np.allclose(a, fn(images, sizes, jax.random.key(1)))


def test_flip_mirrors_about_half_of_the_images():
  images = jnp.zeros((32, 16, 16, 3), jnp.uint8).at[:, :, 8:].set(255)  # Black left half, white right half.
  flips = lambda on: augment.train_transform(
    images, np.full((32, 2), 16, np.int32), jax.random.key(0), image_size=16, min_scale=0.99, flip=on, norm='none'
  )
  mirrored = lambda out: np.asarray(out[:, :, :8].mean((1, 2, 3)) > out[:, :, 8:].mean((1, 2, 3)))
  assert not mirrored(flips(False)).any()
  assert 8 <= mirrored(flips(True)).sum() <= 24


def test_imagenet_normalisation():
  white = jnp.full((1, 4, 4, 3), 255, jnp.uint8)
  out = augment.eval_transform(white, np.int32([[4, 4]]), image_size=4, crop_fraction=1.0, norm='imagenet')
  np.testing.assert_allclose(
    out[0, 0, 0], (1 - np.array(augment.IMAGENET_MEAN)) / np.array(augment.IMAGENET_STD), rtol=1e-5
  )


def test_eval_crop_is_a_fraction_of_the_shorter_side_and_old_configs_keep_theirs():
  from tinycats.config import ConfigError

  for bad in ('0', '1.5', '-0.2'):
    with pytest.raises(ConfigError, match=r"'data.eval_crop' must be in \(0, 1\]"):
      tiny_config(f'--config.data.eval_crop={bad}')
  assert tiny_config('--config.data.eval_crop=1').data.eval_crop == 1.0
  config = tiny_config()
  with config.unlocked():  # Loaded configs are locked.
    del config.data['eval_crop']  # A workdir from before the field: it cut image_size from a cache_size square.
  assert augment.eval_crop(config.data) == config.data.image_size / config.data.cache_size


# Real-world files: one reader (`cache.read_image_file`) for the cache and for prediction.


def test_exif_orientation_is_applied(tmp_path):
  stored = np.zeros((20, 40, 3), np.uint8)
  stored[:, 20:] = 250  # Stored wide: dark left half, bright right half.
  exif = Image.Exif()
  exif[0x0112] = 6  # "Rotate 90 degrees clockwise to display", as a phone held upright writes.
  Image.fromarray(stored).save(tmp_path / 'phone.jpg', exif=exif, quality=95)
  upright = np.asarray(cache.read_image_file(str(tmp_path / 'phone.jpg')))
  assert upright.shape == (40, 20, 3)  # Tall, as shown; its top is the stored left side.
  assert upright[:18].mean() < 10 and upright[22:].mean() > 240
  assert cache.read_image_file(str(tmp_path / 'phone.jpg'), 10).size == (5, 10)  # Reduced (1/4), then turned.


def test_16_bit_and_float_pictures_are_scaled_not_clipped(tmp_path):
  ramp = np.tile(np.linspace(0, 65535, 64).round().astype(np.uint16), (8, 1))
  Image.fromarray(ramp).save(tmp_path / 'ramp16.png')
  assert Image.open(tmp_path / 'ramp16.png').mode == 'I;16'
  rgb = np.asarray(cache.read_image_file(str(tmp_path / 'ramp16.png')))
  assert rgb.shape == (8, 64, 3) and rgb.dtype == np.uint8
  np.testing.assert_allclose(rgb[..., 0], ramp / 257, atol=0.5)  # 0..65535 -> 0..255, not 98% white.
  Image.fromarray((ramp / 65535).astype(np.float32)).save(tmp_path / 'ramp.tif')
  np.testing.assert_allclose(np.asarray(cache.read_image_file(str(tmp_path / 'ramp.tif')))[..., 1], ramp / 257, atol=1)
  canvas, _ = cache.fit(ramp, 64)  # Arrays given to predict: the same rule.
  np.testing.assert_allclose(canvas[:8, :, 2], ramp / 257, atol=1)


def test_transparency_lies_on_white(tmp_path):
  rgba = np.zeros((8, 8, 4), np.uint8)
  rgba[..., 2] = 255  # Blue everywhere, hidden on the left half...
  rgba[:, 4:, 3] = 255  # ...which is transparent.
  Image.fromarray(rgba).save(tmp_path / 'cutout.png')
  palette = Image.fromarray(np.repeat([[0, 1]], 8, 0).repeat(4, 1).astype(np.uint8), mode='P')
  palette.putpalette([0, 0, 255, 255, 0, 0])  # Index 0 blue (transparent), 1 red.
  palette.save(tmp_path / 'palette.png', transparency=0)
  Image.fromarray(rgba[..., [0, 3]]).save(tmp_path / 'grey.png')  # LA: black, half transparent.
  for name, opaque in (('cutout.png', (0, 0, 255)), ('palette.png', (255, 0, 0)), ('grey.png', (0, 0, 0))):
    rgb = np.asarray(cache.read_image_file(str(tmp_path / name)))
    assert (rgb[:, :4] == 255).all() and (rgb[:, 4:] == opaque).all(), name


def test_huge_pictures_are_reduced_or_refused(tmp_path, monkeypatch, recwarn):
  monkeypatch.setattr(cache, 'MAX_PIXELS', 10_000)  # Stands for 50 megapixels: 400x300 is "huge" here.
  monkeypatch.setattr(Image, 'MAX_IMAGE_PIXELS', 5_000)  # Pillow's own check at full size would warn, or fail.
  photo = np.asarray(Image.fromarray(fake_pets.pet_image(np.random.default_rng(0), True, (40, 30))).resize((400, 300)))
  Image.fromarray(photo).save(tmp_path / 'huge.jpg', quality=95)
  Image.fromarray(photo).save(tmp_path / 'huge.png')
  small = cache.read_image_file(str(tmp_path / 'huge.jpg'), 40)  # Decoded at 1/8 scale: 50x38 pixels.
  assert small.size == (50, 38) and not [w for w in recwarn if issubclass(w.category, Image.DecompressionBombWarning)]
  with pytest.raises(ValueError, match=r'400x300 pixels, above the limit of 10,000'):
    cache.read_image_file(str(tmp_path / 'huge.jpg'))  # Without a size it would decode whole.
  loaders = [lambda p=p: (cache.read_image_file(str(tmp_path / p), 40), {'label': 0}) for p in ('huge.jpg', 'huge.png')]
  with pytest.warns(UserWarning, match=r'skipping unreadable image huge.png: ValueError: 400x300 pixels, above'):
    built = cache.build(str(tmp_path / 'cache'), ['huge.jpg', 'huge.png'], loaders, dict(size=40))
  assert built.names == ['huge.jpg'] and built.skipped == ['huge.png']
  np.testing.assert_allclose(built.images[0, :30, :40].mean(), photo.mean(), atol=3)
