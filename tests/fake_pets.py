"""Small fake Oxford-IIIT Pet archives in the official layout, and image folders, for offline tests.

Every picture comes from `tinycats.data.shapes`: the class is carried by shape alone. In the
archives a cat is a head with pointed, upright ears and a dog one with long, hanging ears;
fur colour, texture, background, clutter, position, size, rotation and the picture's aspect
ratio are random per image, as in real photos, so nothing but the ears tells the species.
Breeds within a species look alike (their labels are for the pipeline's tests).
"""

from __future__ import annotations

import dataclasses
import gzip
import io
import os
import tarfile

import numpy as np
from PIL import Image

from tinycats.data import shapes
from tinycats.data.pets import BREEDS

# Capitalised breed names are cats, lowercase are dogs (TFDS's ClassLabel order).
# Names TFDS's builder re-encodes with TensorFlow (its `_CORRUPT_SAMPLES`); we store these as
# PNG-with-alpha bytes under the .jpg name, like the broken files in the real archive.
CORRUPT_SAMPLES = (
  'beagle_116',
  'chihuahua_121',
  'Abyssinian_5',
  'Abyssinian_34',
  'Egyptian_Mau_14',
  'Egyptian_Mau_139',
  'Egyptian_Mau_145',
  'Egyptian_Mau_156',
  'Egyptian_Mau_167',
  'Egyptian_Mau_177',
  'Egyptian_Mau_186',
  'Egyptian_Mau_191',
)
_HEADER = (
  '#Image CLASS-ID SPECIES BREED ID\n'
  '#ID: 1:37 Class ids\n'
  '#SPECIES: 1:Cat 2:Dog\n'
  '#BREED ID: 1-25:Cat 1:12:Dog\n'
  '#All images with 1st letter as captial are cat images\n'
  '#images with small first letter are dog images\n'
)


def is_cat(breed: str) -> bool:
  return breed[0].isupper()


def pet_image(
  rng: np.random.Generator, cat: bool, size: tuple[int, int], style: shapes.Style = shapes.HARD
) -> np.ndarray:
  """A uint8 (H, W, 3) picture of a cat's or a dog's head (`shapes.PETS`), everything but the ears at random."""
  return shapes.render(rng, 'cat' if cat else 'dog', style, size=size)


def _jpeg(image: np.ndarray) -> bytes:
  buf = io.BytesIO()
  Image.fromarray(image).save(buf, format='JPEG', quality=90)
  return buf.getvalue()


def _png(image: np.ndarray) -> bytes:
  buf = io.BytesIO()
  Image.fromarray(image).save(buf, format='PNG')
  return buf.getvalue()


def _trimap(height: int, width: int, box: tuple[int, int, int, int]) -> np.ndarray:
  """Official trimap values: 1 pet, 2 background, 3 border."""
  xmin, ymin, xmax, ymax = box
  trimap = np.full((height, width), 2, np.uint8)
  trimap[ymin:ymax, xmin:xmax] = 3
  trimap[ymin + 1 : ymax - 1, xmin + 1 : xmax - 1] = 1
  return trimap


def _xml(name: str, breed: str, height: int, width: int, box: tuple[int, int, int, int]) -> bytes:
  xmin, ymin, xmax, ymax = box
  return (
    f'<annotation><folder>OXIIIT</folder><filename>{name}.jpg</filename>'
    '<source><database>OXIIIT</database></source>'
    f'<size><width>{width}</width><height>{height}</height><depth>3</depth></size>'
    '<segmented>0</segmented>'
    f'<object><name>{"cat" if is_cat(breed) else "dog"}</name><pose>Frontal</pose>'
    '<truncated>0</truncated><occluded>0</occluded>'
    f'<bndbox><xmin>{xmin}</xmin><ymin>{ymin}</ymin><xmax>{xmax}</xmax><ymax>{ymax}</ymax></bndbox>'
    '<difficult>0</difficult></object></annotation>\n'
  ).encode()


def _add(tar: tarfile.TarFile, name: str, data: bytes) -> None:
  info = tarfile.TarInfo(name)
  info.size = len(data)
  info.mtime = 0  # Same seed, same bytes, same sha256.
  tar.addfile(info, io.BytesIO(data))


def _indices(breed: str, n: int) -> list[int]:
  """1-based image numbers; Abyssinian includes 5 so one TFDS-known corrupt sample exists."""
  indices = list(range(1, n + 1))
  if breed == 'Abyssinian' and 5 not in indices and indices:
    indices[0] = 5
  return indices


def make_archives(
  out_dir: str,
  per_breed_train: int = 2,
  per_breed_test: int = 1,
  breeds: tuple[str, ...] | list[str] | None = None,
  size: int = 48,
  seed: int = 0,
) -> dict:
  """Writes `images.tar.gz` and `annotations.tar.gz` into out_dir, as published.

  Image sizes vary around `size` (the real images vary too). Returns names per split, labels,
  species counts, shapes and the corrupt-sample names, for tests to assert against.
  """
  breeds = tuple(breeds) if breeds is not None else BREEDS
  unknown = [b for b in breeds if b not in BREEDS]
  if unknown:
    raise ValueError(f'unknown breeds {unknown}')
  rng = np.random.default_rng(seed)
  os.makedirs(out_dir, exist_ok=True)
  cat_ids = {b: i + 1 for i, b in enumerate(b for b in BREEDS if is_cat(b))}
  dog_ids = {b: i + 1 for i, b in enumerate(b for b in BREEDS if not is_cat(b))}
  result = {
    'train': [],
    'test': [],
    'labels': {},
    'species': {},
    'shapes': {},
    'corrupt': [],
    'species_counts': {'train': {'cat': 0, 'other': 0}, 'test': {'cat': 0, 'other': 0}},
  }
  lines = {'train': [], 'test': []}
  images, annotations = [], []
  for breed in breeds:
    cat = is_cat(breed)
    class_id = BREEDS.index(breed) + 1
    breed_id = cat_ids[breed] if cat else dog_ids[breed]
    indices = _indices(breed, per_breed_train + per_breed_test)
    for k, index in enumerate(indices):
      split = 'train' if k < per_breed_train else 'test'
      name = f'{breed}_{index}'
      height, width = shapes.picture_size(rng, shapes.Style(size=size))  # Most are not square, as in the archive.
      image = pet_image(rng, cat, (height, width))
      if name in CORRUPT_SAMPLES:
        alpha = np.full((height, width, 1), 255, np.uint8)
        images.append((f'images/{name}.jpg', _png(np.concatenate([image, alpha], -1))))
        result['corrupt'].append(name)
      else:
        images.append((f'images/{name}.jpg', _jpeg(image)))
      x0, y0 = int(rng.integers(0, width // 3)), int(rng.integers(0, height // 3))
      box = (x0, y0, x0 + width // 2, y0 + height // 2)
      annotations.append((f'annotations/trimaps/{name}.png', _png(_trimap(height, width, box))))
      if split == 'train':
        annotations.append((f'annotations/xmls/{name}.xml', _xml(name, breed, height, width, box)))
      lines[split].append(f'{name} {class_id} {1 if cat else 2} {breed_id}\n')
      result[split].append(name)
      result['labels'][name] = class_id - 1
      result['species'][name] = 'cat' if cat else 'other'
      result['shapes'][name] = (height, width, 3)
      result['species_counts'][split]['cat' if cat else 'other'] += 1
  annotations += [
    ('annotations/trainval.txt', ''.join(lines['train']).encode()),
    ('annotations/test.txt', ''.join(lines['test']).encode()),
    ('annotations/list.txt', (_HEADER + ''.join(sorted(lines['train'] + lines['test']))).encode()),
  ]
  for archive, entries in (('images.tar.gz', images), ('annotations.tar.gz', annotations)):
    with (
      gzip.GzipFile(os.path.join(out_dir, archive), 'wb', mtime=0) as gz,
      tarfile.open(fileobj=gz, mode='w', format=tarfile.USTAR_FORMAT) as tar,
    ):
      for name, data in entries:
        _add(tar, name, data)
  return result


def folder_shapes(classes) -> tuple[str, ...]:
  """The shape drawn for each class name: a shape's own name, cat/other as the pets' heads, else SHAPES in order."""
  if tuple(classes) == ('cat', 'other'):
    return ('cat', 'dog')
  known = shapes.SHAPES + shapes.PETS
  if all(c in known for c in classes):
    return tuple(classes)
  return shapes.SHAPES[: len(classes)]


def make_image_folder(
  root: str,
  classes: tuple[str, ...] = ('cat', 'other'),
  per_class: int = 8,
  size: int = 48,
  seed: int = 0,
  style: shapes.Style = shapes.EASY,
) -> dict[str, list[str]]:
  """Writes `root/<class>/<i>.jpg`, each class a shape (`folder_shapes`), all else random per image.

  Returns the written paths per class.
  """
  rng = np.random.default_rng(seed)
  style = dataclasses.replace(style, size=size)
  drawn = dict(zip(classes, folder_shapes(classes)))
  paths = {name: [] for name in classes}
  for name in classes:
    os.makedirs(os.path.join(root, name), exist_ok=True)
  for i in range(per_class):  # Interleaved: any prefix of the seed's stream is balanced.
    for name in classes:
      path = os.path.join(root, name, f'{i}.jpg')
      with open(path, 'wb') as f:
        f.write(_jpeg(shapes.render(rng, drawn[name], style)))
      paths[name].append(path)
  return paths


if __name__ == '__main__':
  # Synthetic archives for a CPU smoke run, e.g. the README's figures:
  #   python tests/fake_pets.py OUT_DIR --per-breed-train 20 --per-breed-test 5 --size 160
  import argparse

  parser = argparse.ArgumentParser(
    description='Write fake Oxford-IIIT Pet archives (cat and dog heads that differ in their ears) to OUT_DIR.'
  )
  parser.add_argument('out_dir')
  parser.add_argument('--per-breed-train', type=int, default=2)
  parser.add_argument('--per-breed-test', type=int, default=1)
  parser.add_argument('--size', type=int, default=48)
  parser.add_argument('--seed', type=int, default=0)
  a = parser.parse_args()
  made = make_archives(a.out_dir, a.per_breed_train, a.per_breed_test, size=a.size, seed=a.seed)
  print({split: len(made[split]) for split in ('train', 'test')})
