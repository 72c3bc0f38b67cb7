"""Labelled splits for a config: source (TFDS or image folder) -> decoded uint8 cache.

`load(config)` returns the class names and the train/val/test splits as cached uint8 arrays.
The TFDS train split is divided into train and val (seeded); TFDS's test split is kept for
the final evaluation. An image folder is divided into all three by seed.
"""
from __future__ import annotations

import dataclasses
import hashlib
import os

import numpy as np

from tinycats.data import cache, folder
from tinycats.errors import UserError

SPLITS = ('train', 'val', 'test')


@dataclasses.dataclass
class Split:
  images: np.ndarray  # (N, S, S, 3) uint8
  labels: np.ndarray  # (N,) int32
  names: list[str]
  skipped: list[str]

  def __len__(self):
    return len(self.labels)


@dataclasses.dataclass
class Data:
  classes: list[str]
  splits: dict[str, Split]


def _limit(indices: np.ndarray, max_examples: int, seed: int) -> np.ndarray:
  """A seeded random subset (sorted): the first N of a class-ordered listing would be one class."""
  if not max_examples or len(indices) <= max_examples:
    return indices
  return np.sort(np.random.default_rng(seed).permutation(indices)[:max_examples])


def _fingerprint(paths) -> str:
  """Names, sizes and modification times: a cache built from other bytes is not reused."""
  stats = [(str(p), os.path.getsize(p), os.path.getmtime(p)) for p in paths]
  return hashlib.sha256(repr(stats).encode()).hexdigest()


def _tfds_parts(config):
  from tinycats.data import pets  # TFDS is imported only for this source.
  data_dir = os.path.abspath(os.path.expanduser(default_tfds_dir(config)))
  sources = {split: pets.read_split(data_dir, split, skip_decoding=('segmentation_mask',))
             for split in ('train', 'test')}
  n_train = len(sources['train'])
  order = np.random.default_rng(config.data.split_seed).permutation(n_train)
  n_val = round(n_train * config.data.val_fraction)
  parts = {'train': ('train', np.sort(order[n_val:])), 'val': ('train', np.sort(order[:n_val])),
           'test': ('test', np.arange(len(sources['test'])))}
  label_set = config.data.labels
  variant = pets.variant_dir(data_dir)
  content = _fingerprint(sorted(os.path.join(variant, f) for f in os.listdir(variant)))
  classes = list(pets.LABEL_SETS[label_set])

  def loader(source, i):
    def load():
      record = source[int(i)]
      return record['image'], {'label': int(record['label']), 'species': int(record['species'])}
    return load

  out = {}
  for name, (tfds_split, indices) in parts.items():
    indices = _limit(indices, config.data.max_examples, config.data.split_seed)
    key = dict(source='tfds', data_dir=data_dir, split=tfds_split, indices=_digest(indices), content=content,
               size=config.data.cache_size)
    names = [f'{pets.NAME}/{tfds_split}[{i}]' for i in indices]
    out[name] = (key, names, [loader(sources[tfds_split], i) for i in indices])
  to_labels = lambda fields: pets.labels_for(label_set, fields['label'])  # The cache keeps the breed.
  return classes, to_labels, out, os.path.join(data_dir, 'tinycats-cache')


def _folder_parts(config):
  root = os.path.abspath(os.path.expanduser(config.data.folder))
  classes, files, labels = folder.list_images(root)
  parts = folder.split_indices(len(files), config.data.split_seed, config.data.val_fraction, config.data.test_fraction)

  def loader(i):
    return lambda: (cache.read_image_file(files[i]), {'label': int(labels[i])})

  out = {}
  for name, indices in parts.items():
    indices = _limit(indices, config.data.max_examples, config.data.split_seed)
    chosen = [files[i] for i in indices]
    key = dict(source='folder', root=root, split=name, files=_digest(chosen), content=_fingerprint(chosen),
               size=config.data.cache_size)
    out[name] = (key, [os.path.relpath(f, root) for f in chosen], [loader(i) for i in indices])
  return classes, lambda fields: fields['label'], out, os.path.join(root, '.tinycats-cache')


def default_tfds_dir(config) -> str:
  """`data.data_dir`, else TFDS's own default ($TFDS_DATA_DIR or ~/tensorflow_datasets)."""
  return config.data.data_dir or os.environ.get('TFDS_DATA_DIR') or '~/tensorflow_datasets'


def _digest(items) -> str:
  return hashlib.sha256(repr(list(map(str, items))).encode()).hexdigest()


def load(config, splits=SPLITS) -> Data:
  """Decodes (once; later runs reuse the cache) and returns the requested splits."""
  classes, to_labels, parts, beside_data = (_tfds_parts if config.data.source == 'tfds' else _folder_parts)(config)
  cache_dir = os.path.expanduser(config.data.cache_dir or os.environ.get('TINYCATS_CACHE') or beside_data)
  out = {}
  for name in splits:
    key, names, loaders = parts[name]
    if not loaders:
      raise UserError(f'the {name} split is empty; check data.val_fraction / data.test_fraction / data.max_examples')
    cached = cache.get_or_build(cache_dir, key, names, loaders)
    out[name] = Split(cached.images, to_labels(cached.labels), cached.names, cached.skipped)
  return Data(classes, out)
