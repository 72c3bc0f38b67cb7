"""Labelled splits for a config: source (TFDS or image folder) -> decoded uint8 cache.

`load(config)` returns the class names and the train/val/test splits as cached uint8 arrays: each
image whole on a padded canvas, with its size (see `cache.py`).
The TFDS train split is divided into train and val (seeded, stratified by class, at least
`data.val_min_per_class` of each class in val); TFDS's test split is kept for the final
evaluation. An image folder is divided into all three the same way (`stratify.py`).
"""

from __future__ import annotations

import copy
import dataclasses
import functools
import hashlib
import io
import json
import os

import numpy as np

from tinycats import writers
from tinycats.data import cache, folder, pets, stratify
from tinycats.errors import UserError

SPLITS = ('train', 'val', 'test')


@dataclasses.dataclass
class Split:
  images: np.ndarray  # (N, S, S, 3) uint8 canvases; the picture is the top-left `sizes[i]` of each.
  labels: np.ndarray  # (N,) int32
  names: list[str]
  skipped: list[str]
  sizes: np.ndarray  # (N, 2) int32: (height, width) of each picture on its canvas.
  fingerprint: str | None = None  # The cache's `content_fingerprint`: a resumed run must see the same images.
  # The pictures' names, their source files' bytes and their labels: which pictures a split is, on any machine
  # (the workdir's data.json records it; evaluate checks it). None where unknown.
  source_digest: str | None = None

  def __len__(self):
    return len(self.labels)

  def image(self, i: int) -> np.ndarray:
    """Image `i` as cached, without its canvas's padding: (h, w, 3) uint8, what `Classifier.predict` takes."""
    h, w = self.sizes[i]
    return np.asarray(self.images[i, :h, :w])


@dataclasses.dataclass
class Data:
  classes: list[str]
  splits: dict[str, Split]


def _val_floor(config) -> int:
  return config.data.get('val_min_per_class', 0)  # A workdir's config.json older than the field: none.


def _limit(config, name: str, indices: np.ndarray, labels_of) -> np.ndarray:
  """`data.max_examples` of a split, classes in proportion; val keeps its per-class floor above the cap."""
  return stratify.limit(
    indices, labels_of, config.data.max_examples, config.data.split_seed, _val_floor(config) if name == 'val' else 0
  )


def _combine(*parts) -> str:
  return hashlib.sha256(json.dumps(parts, default=str).encode()).hexdigest()


@functools.lru_cache(maxsize=4)
def _tfds_index(data_dir: str, split: str, content: str) -> tuple[np.ndarray, tuple[str, ...]]:
  """Every record's breed and file name, read once per process (`content` names the prepared files): the split
  is stratified before any image is decoded."""
  source = pets.read_split(data_dir, split, skip_decoding=('image', 'segmentation_mask'))
  chunks = (range(start, min(start + 256, len(source))) for start in range(0, len(source), 256))
  records = [(int(r['label']), r['file_name'].decode()) for chunk in chunks for r in source.__getitems__(chunk)]
  return np.asarray([label for label, _ in records], np.int64), tuple(name for _, name in records)


def _tfds_parts(config, splits=SPLITS):
  data_dir = os.path.abspath(os.path.expanduser(default_tfds_dir(config)))
  sources = {
    split: pets.read_split(data_dir, split, skip_decoding=('image', 'segmentation_mask')) for split in ('train', 'test')
  }
  label_set = config.data.labels
  variant = pets.variant_dir(data_dir)
  shards = sorted(os.listdir(variant))
  digests = cache.file_digests([os.path.join(variant, f) for f in shards])
  content = _combine(shards, digests)  # Every file: any change makes a new cache.
  classes = list(pets.LABEL_SETS[label_set])
  labels = lambda split: pets.labels_for(label_set, _tfds_index(data_dir, split, content)[0])
  parts = {'test': ('test', np.arange(len(sources['test'])))}
  if {'train', 'val'} & set(splits):  # Only these need the training labels read.
    d = config.data
    held = stratify.split_indices(labels('train'), d.split_seed, d.val_fraction, 0.0, _val_floor(config))
    parts.update(train=('train', held['train']), val=('train', held['val']))

  def loader(source, i):
    def load():
      record = source[int(i)]  # The JPEG's bytes, read as a folder's files are (EXIF orientation, reduction).
      image = cache.read_image_file(io.BytesIO(record['image']), config.data.cache_size)
      return image, {'label': int(record['label']), 'species': int(record['species'])}

    return load

  out = {}
  for name, (tfds_split, indices) in parts.items():
    indices = _limit(config, name, indices, lambda: labels(tfds_split)[indices])
    key = dict(
      source='tfds',
      data_dir=data_dir,
      split=tfds_split,
      indices=_digest(indices),
      content=content,
      size=config.data.cache_size,
    )
    names = [f'{pets.NAME}/{tfds_split}[{i}]' for i in indices]
    # Which pictures, by their official file names and labels, in no order: the same for the archives prepared on
    # Modal and at home (two preparations write other bytes, and may order the records otherwise).
    breeds, files = _tfds_index(data_dir, tfds_split, content)
    source_digest = _combine(sorted((files[i], int(breeds[i])) for i in indices), label_set)
    out[name] = (key, names, [loader(sources[tfds_split], i) for i in indices], source_digest)
  to_labels = lambda fields: pets.labels_for(label_set, fields['label'])  # The cache keeps the breed.
  return classes, to_labels, out, os.path.join(data_dir, 'tinycats-cache')


def _folder_parts(config, splits=SPLITS):
  root = os.path.abspath(os.path.expanduser(config.data.folder))
  classes, files, labels = folder.list_images(root)
  d = config.data
  parts = stratify.split_indices(labels, d.split_seed, d.val_fraction, d.test_fraction, _val_floor(config))
  limited = {name: _limit(config, name, parts[name], lambda idx=parts[name]: labels[idx]) for name in splits}
  wanted = sorted({int(i) for indices in limited.values() for i in indices})
  digests = dict(zip(wanted, cache.file_digests([files[i] for i in wanted])))  # Only the files the splits use.

  def loader(i):
    return lambda: (cache.read_image_file(files[i], d.cache_size), {'label': int(labels[i])})

  out = {}
  for name, indices in limited.items():
    chosen = [files[i] for i in indices]
    names = [os.path.relpath(f, root) for f in chosen]
    content = _combine(names, [digests[int(i)] for i in indices], [classes[labels[i]] for i in indices])
    key = dict(source='folder', root=root, split=name, files=_digest(chosen), content=content, size=d.cache_size)
    out[name] = (key, names, [loader(i) for i in indices], content)
  return classes, lambda fields: fields['label'], out, os.path.join(root, '.tinycats-cache')


def default_tfds_dir(config) -> str:
  """`data.data_dir`, else TFDS's own default ($TFDS_DATA_DIR or ~/tensorflow_datasets)."""
  return config.data.data_dir or os.environ.get('TFDS_DATA_DIR') or '~/tensorflow_datasets'


def _digest(items) -> str:
  return hashlib.sha256(repr(list(map(str, items))).encode()).hexdigest()


RECORD = 'data.json'  # In a workdir: which pictures each split of the run was (`record`, `check_record`).


def record(data: Data, workdir: str) -> None:
  """Writes WORKDIR/data.json: each split's `source_digest` and size, facts of the run that evaluate checks."""
  writers.write_json(
    {name: dict(source_digest=split.source_digest, images=len(split)) for name, split in data.splits.items()},
    os.path.join(workdir, RECORD),
  )


def check_record(data: Data, workdir: str, names=SPLITS) -> None:
  """Raises a one-line UserError when a split in `names` is not the one WORKDIR/data.json recorded (pictures
  added, removed, edited or relabelled since: a folder is split again by its listing). A run older than the
  record is not checked."""
  path = os.path.join(workdir, RECORD)
  if not os.path.isfile(path):
    return
  with open(path) as f:
    recorded = json.load(f)
  for name in names:
    was, split = recorded.get(name, {}), data.splits.get(name)
    if split is not None and was.get('source_digest') not in (None, split.source_digest):
      raise UserError(
        f'the {name} split of the data is not the one {workdir} was trained with ({was.get("images")} pictures '
        f'then, {len(split)} now): pictures were added, removed, edited or relabelled since. Restore the data as '
        'it was, or train a new run on the data as it is.'
      )


def location(config) -> str:
  """Where a config's data is: the TFDS data dir (`data.source` tfds) or the image folder (folder)."""
  return default_tfds_dir(config) if config.data.source == 'tfds' else config.data.folder


def relocated(config, where: str):
  """A copy of `config` whose data is at `where` (a TFDS data dir or an image folder, as its source has):
  a run trained on Modal (`/data/tfds`) evaluated on a laptop. Which pictures a split is (`data.json`) is
  checked as before, so other data at the new place is still refused."""
  config = copy.deepcopy(config)
  if config.data.source == 'tfds':
    config.data.data_dir = where
  else:
    config.data.folder = where
  return config


def load(config, splits=SPLITS) -> Data:
  """Decodes (once; later runs reuse the cache) and returns the requested splits."""
  parts_of = _tfds_parts if config.data.source == 'tfds' else _folder_parts
  classes, to_labels, parts, beside_data = parts_of(config, splits)
  cache_dir = os.path.expanduser(config.data.cache_dir or os.environ.get('TINYCATS_CACHE') or beside_data)
  out = {}
  for name in splits:
    key, names, loaders, source_digest = parts[name]
    if not loaders:
      raise UserError(f'the {name} split is empty; check data.val_fraction / data.test_fraction / data.max_examples')
    cached = cache.get_or_build(cache_dir, key, names, loaders)
    out[name] = Split(
      cached.images,
      to_labels(cached.labels),
      cached.names,
      cached.skipped,
      cached.sizes,
      cached.fingerprint,
      source_digest,
    )
  if 'val' in out:
    stratify.warn_if_few(out['val'].labels, classes, _val_floor(config))
  return Data(classes, out)
