"""`tinycats prepare` runs TFDS's real oxford_iiit_pet builder; reading needs no TensorFlow."""

from __future__ import annotations

import importlib.util
import io
import json
import os
import subprocess
import sys
import tarfile
import textwrap

import fake_pets
import numpy as np
import pytest
from conftest import REPO, run_tinycats

from tinycats.data import pets


def test_constants_match_tfds(prepared_pets):
  import tensorflow_datasets as tfds

  features = tfds.builder(pets.NAME, data_dir=prepared_pets).info.features
  assert tuple(features['label'].names) == pets.BREEDS
  assert tuple(features['species'].names) == ('Cat', 'Dog') and pets.SPECIES == ('cat', 'other')


def test_prepare_writes_both_splits(prepared_pets, pets_archives):
  _, fake = pets_archives
  for split in ('train', 'test'):
    source = pets.read_split(prepared_pets, split)
    records = [source[i] for i in range(len(source))]
    names = sorted(r['file_name'].decode()[: -len('.jpg')] for r in records)
    assert names == sorted(fake[split])
    for record in records:
      name = record['file_name'].decode()[: -len('.jpg')]
      assert record['label'] == fake['labels'][name]
      assert pets.SPECIES[record['species']] == fake['species'][name]
      assert record['image'].dtype == np.uint8 and record['image'].shape == fake['shapes'][name]
      assert set(np.unique(record['segmentation_mask'])) <= {1, 2, 3}
      assert (record['head_bbox'].sum() > 0) == (split == 'train')  # TFDS: no boxes for test.
  counts = {s: sum(fake['species_counts'][split][s] for split in ('train', 'test')) for s in pets.SPECIES}
  assert counts == {'cat': 12 * 6, 'other': 25 * 6}  # 12 cat and 25 dog breeds, 5 train + 1 test images each.


def test_corrupt_sample_repaired_by_tfds(prepared_pets, pets_archives):
  """Abyssinian_5 is a PNG with alpha under a .jpg name; TFDS re-encodes it to 3-channel JPEG.

  TFDS stores other images' bytes as given, so JPEG bytes here mean its TensorFlow repair ran.
  """
  import tensorflow_datasets as tfds

  _, fake = pets_archives
  assert fake['corrupt'] == ['Abyssinian_5']
  source = pets.read_split(prepared_pets, 'train')
  (image,) = [source[i]['image'] for i in range(len(source)) if source[i]['file_name'] == b'Abyssinian_5.jpg']
  assert image.shape == fake['shapes']['Abyssinian_5']
  raw = tfds.builder(pets.NAME, data_dir=prepared_pets).as_data_source(
    split='train', decoders={'image': tfds.decode.SkipDecoding()}
  )
  (encoded,) = [raw[i]['image'] for i in range(len(raw)) if raw[i]['file_name'] == b'Abyssinian_5.jpg']
  assert encoded[:3] == b'\xff\xd8\xff'


def test_prepare_leaves_only_the_dataset(prepared_pets):
  assert sorted(os.listdir(prepared_pets)) == ['oxford_iiit_pet']  # Scratch downloads/extraction removed.
  assert sorted(os.listdir(os.path.join(prepared_pets, 'oxford_iiit_pet'))) == ['4.0.0']
  with open(os.path.join(prepared_pets, 'oxford_iiit_pet', '4.0.0', 'dataset_info.json')) as f:
    info = json.load(f)
  assert info['fileFormat'] == 'array_record'
  assert info['moduleName'].startswith('tensorflow_datasets.')  # Same metadata as the registered builder.


def test_reading_and_reprepare_need_no_tensorflow(prepared_pets):
  """Hides TensorFlow as if not installed: an already prepared dir and reading must work."""
  code = textwrap.dedent(f"""
      import importlib.machinery, json, sys
      class HideTensorflow(importlib.machinery.PathFinder):
        @classmethod
        def find_spec(cls, name, path=None, target=None):
          if name.split('.')[0] == 'tensorflow':
            return None
          return super().find_spec(name, path, target)
      sys.meta_path = [HideTensorflow if f is importlib.machinery.PathFinder else f for f in sys.meta_path]
      import importlib.util
      assert importlib.util.find_spec('tensorflow') is None
      from tinycats.data import pets
      counts = pets.prepare({prepared_pets!r})
      source = pets.read_split({prepared_pets!r}, 'test')
      record = source[0]
      assert record['image'].ndim == 3, record['image'].shape
      print(json.dumps({{'counts': counts, 'n': len(source), 'tf': 'tensorflow' in sys.modules}}))
  """)
  result = subprocess.run([sys.executable, '-c', code], cwd=REPO, capture_output=True, text=True, timeout=120)
  assert result.returncode == 0, result.stderr[-4000:]
  out = json.loads(result.stdout.strip().splitlines()[-1])
  assert out == {'counts': {'test': 37, 'train': 185}, 'n': 37, 'tf': False}
  assert 'already prepared' in result.stderr


def test_importing_pets_does_not_import_tensorflow_datasets():
  code = 'import sys; import tinycats.data.pets; print(sorted(m for m in sys.modules if m.startswith("tensorflow")))'
  result = subprocess.run([sys.executable, '-c', code], cwd=REPO, capture_output=True, text=True, timeout=60)
  assert result.returncode == 0, result.stderr[-2000:]
  assert result.stdout.strip() == '[]'


def test_unverified_archives_are_refused(pets_archives, tmp_path):
  data_dir = str(tmp_path / 'tfds')
  result = run_tinycats('prepare', '--archives', pets_archives[0], '--data-dir', data_dir)
  assert result.returncode != 0
  assert 'sha256' in result.stderr and '--no-verify' in result.stderr
  assert 'images.tar.gz' in result.stderr and 'annotations.tar.gz' in result.stderr
  assert '67195c5e1c01f1ab5f9b6a5d22b8c27a580d896ece458917e61d459337fa318d' in result.stderr  # Expected.
  assert not os.path.exists(os.path.join(data_dir, pets.NAME))


def test_failed_prepare_leaves_nothing(tmp_path):
  """An image listed in trainval.txt but absent from images.tar.gz fails inside TFDS's generation."""
  archives = str(tmp_path / 'archives')
  fake_pets.make_archives(archives, breeds=['Bengal', 'pug'], per_breed_train=1, per_breed_test=1)
  images = os.path.join(archives, 'images.tar.gz')
  with tarfile.open(images) as tar:
    entries = [(m, tar.extractfile(m).read()) for m in tar.getmembers() if m.name != 'images/pug_1.jpg']
  with tarfile.open(images, 'w:gz') as tar:
    for member, data in entries:
      tar.addfile(member, io.BytesIO(data))
  data_dir = tmp_path / 'tfds'
  result = run_tinycats('prepare', '--archives', archives, '--data-dir', str(data_dir), '--no-verify')
  assert result.returncode != 0
  assert 'pug_1.jpg' in result.stderr
  assert os.listdir(data_dir) == []  # No dataset folder, no incomplete.*, no scratch downloads.


def test_missing_archive_is_named(tmp_path):
  archives = tmp_path / 'archives'
  archives.mkdir()
  (archives / 'images.tar.gz').write_bytes(b'')
  with pytest.raises(pets.PrepareError, match=r'annotations\.tar\.gz not found.*robots\.ox\.ac\.uk'):
    pets.prepare(str(tmp_path / 'tfds'), archives=str(archives))
  with pytest.raises(pets.PrepareError, match='not a folder'):
    pets.prepare(str(tmp_path / 'tfds'), archives=str(tmp_path / 'nowhere'))
  assert not os.path.exists(tmp_path / 'tfds' / pets.NAME)


def test_missing_tensorflow_says_how_to_install(pets_archives, tmp_path, monkeypatch):
  find_spec = importlib.util.find_spec
  monkeypatch.setattr(
    importlib.util, 'find_spec', lambda name, *a: None if name == 'tensorflow' else find_spec(name, *a)
  )
  with pytest.raises(pets.PrepareError, match=r"pip install 'tinycats\[prepare\]'"):
    pets.prepare(str(tmp_path / 'tfds'), archives=pets_archives[0], verify=False)


def test_reading_unprepared_dir_gives_the_command(tmp_path):
  with pytest.raises(pets.PrepareError) as error:
    pets.read_split(str(tmp_path), 'train')
  assert f'tinycats prepare --archives DIR --data-dir {tmp_path}' in str(error.value)
  assert not os.path.exists(tmp_path / pets.NAME)


def test_fake_archives_are_deterministic(tmp_path):
  a = fake_pets.make_archives(str(tmp_path / 'a'), breeds=['Bengal', 'pug'], per_breed_train=1, per_breed_test=1)
  fake_pets.make_archives(str(tmp_path / 'b'), breeds=['Bengal', 'pug'], per_breed_train=1, per_breed_test=1)
  assert a['train'] == ['Bengal_1', 'pug_1'] and a['labels'] == {'Bengal_1': 5, 'Bengal_2': 5, 'pug_1': 25, 'pug_2': 25}
  for name in pets.ARCHIVES:
    assert (tmp_path / 'a' / name).read_bytes() == (tmp_path / 'b' / name).read_bytes()
