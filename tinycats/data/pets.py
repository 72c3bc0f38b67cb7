"""Oxford-IIIT Pet through TFDS: prepare once (needs TensorFlow), read without it.

`prepare` runs TFDS's own registered `oxford_iiit_pet` builder (download manager, extractor,
its repair of 12 corrupt JPEGs, writer) and writes ArrayRecord, so that `read_split` can use
`tfds.data_source`, which decodes with NumPy/PIL and never imports TensorFlow.
"""

from __future__ import annotations

import hashlib
import importlib.util
import os
import socket
import sys
import tempfile
import urllib.parse

import numpy as np
from tqdm import tqdm

from tinycats.errors import UserError

NAME = 'oxford_iiit_pet'
HOMEPAGE = 'http://www.robots.ox.ac.uk/~vgg/data/pets/'
ARCHIVES = ('images.tar.gz', 'annotations.tar.gz')
# TFDS's ClassLabel order for 'label' (capitalised names are cats, lowercase are dogs).
BREEDS = (
  'Abyssinian',
  'american_bulldog',
  'american_pit_bull_terrier',
  'basset_hound',
  'beagle',
  'Bengal',
  'Birman',
  'Bombay',
  'boxer',
  'British_Shorthair',
  'chihuahua',
  'Egyptian_Mau',
  'english_cocker_spaniel',
  'english_setter',
  'german_shorthaired',
  'great_pyrenees',
  'havanese',
  'japanese_chin',
  'keeshond',
  'leonberger',
  'Maine_Coon',
  'miniature_pinscher',
  'newfoundland',
  'Persian',
  'pomeranian',
  'pug',
  'Ragdoll',
  'Russian_Blue',
  'saint_bernard',
  'samoyed',
  'scottish_terrier',
  'shiba_inu',
  'Siamese',
  'Sphynx',
  'staffordshire_bull_terrier',
  'wheaten_terrier',
  'yorkshire_terrier',
)
# TFDS 'species': 0 Cat, 1 Dog. We classify cat vs everything else.
SPECIES = ('cat', 'other')
# The generator's 13 labels: the 12 cat breeds (0-11, in BREEDS order) and every dog as 'other' (12).
CAT_BREEDS = tuple(b for b in BREEDS if b[0].isupper()) + ('other',)
LABEL_SETS = {'species': SPECIES, 'breed': BREEDS, 'cat_breeds': CAT_BREEDS}


def _target(label_set: str, breed: str) -> int:
  names = LABEL_SETS[label_set]
  if breed in names:
    return names.index(breed)
  return names.index('cat' if label_set == 'species' and breed[0].isupper() else 'other')


def labels_for(label_set: str, breed: np.ndarray) -> np.ndarray:
  """TFDS breed indices (into BREEDS) -> indices into LABEL_SETS[label_set] (dogs are 'other')."""
  table = np.asarray([_target(label_set, b) for b in BREEDS], np.int32)
  return table[np.asarray(breed, np.int64)]


class PrepareError(UserError):
  """The dataset cannot be prepared or read; the message says the way out."""


def _log(message: str) -> None:
  print(f'tinycats prepare: {message}', file=sys.stderr, flush=True)


def _prepare_command(data_dir: str) -> str:
  return f'tinycats prepare --archives DIR --data-dir {data_dir}'


def variant_dir(data_dir: str) -> str:
  """`DATA_DIR/oxford_iiit_pet/<version>`, where the prepared files are."""
  import tensorflow_datasets as tfds

  return os.path.join(data_dir, NAME, str(tfds.builder_cls(NAME).VERSION))


def is_prepared(data_dir: str) -> bool:
  """Like `builder.is_prepared()`, without building one first.

  TFDS's builder warns when the folder is missing, and on an unprepared folder its constructor
  leaves an empty `/tmp/tmp*tfds` folder behind (DatasetInfo.initialize_from_bucket).
  """
  variant = variant_dir(data_dir)
  return all(os.path.isfile(os.path.join(variant, name)) for name in ('dataset_info.json', 'features.json'))


def _counts(builder) -> dict[str, int]:
  return {name: split.num_examples for name, split in sorted(builder.info.splits.items())}


def _sha256(path: str) -> tuple[str, int]:
  """SHA-256 and size of a file, with a progress bar (the images archive is 792 MB)."""
  digest, size = hashlib.sha256(), os.path.getsize(path)
  with (
    open(path, 'rb') as f,
    tqdm(
      total=size, unit='B', unit_scale=True, desc=f'sha256 {os.path.basename(path)}', file=sys.stderr, leave=False
    ) as bar,
  ):
    while chunk := f.read(1 << 20):
      digest.update(chunk)
      bar.update(len(chunk))
  return digest.hexdigest(), size


def _check_missing(archives: str) -> None:
  if not os.path.isdir(archives):
    raise PrepareError(
      f'--archives {archives!r} is not a folder; it should hold {" and ".join(ARCHIVES)} from {HOMEPAGE}'
    )
  missing = [name for name in ARCHIVES if not os.path.isfile(os.path.join(archives, name))]
  if missing:
    raise PrepareError(
      f'{" and ".join(missing)} not found in {archives!r}. Download images.tar.gz and annotations.tar.gz '
      f'from the official page {HOMEPAGE} into that folder (or omit --archives to let TFDS download them).'
    )


def _check_archives(archives: str, verify: bool) -> dict:
  """Checks (when verifying) that the archives are the ones TFDS registered.

  Returns {url: UrlInfo} of the archives as they are, for TFDS to expect.
  """
  import tensorflow_datasets as tfds

  registered = {info.filename: (url, info) for url, info in tfds.builder_cls(NAME).url_infos.items()}
  _log("checking the archives' sha256 against TFDS's registered checksums")
  actual, mismatches = {}, []
  for name in ARCHIVES:
    url, expected = registered[name]
    checksum, size = _sha256(os.path.join(archives, name))
    actual[url] = tfds.download.checksums.UrlInfo(size=size, checksum=checksum, filename=name)
    if checksum != expected.checksum:
      mismatches.append(
        f'  {name}: expected sha256 {expected.checksum} ({int(expected.size)} bytes), got {checksum} ({size} bytes)'
      )
  if mismatches and verify:
    raise PrepareError(
      f'archives in {archives!r} differ from the ones TFDS registered for {NAME}:\n'
      + '\n'.join(mismatches)
      + f'\nGet the official archives from {HOMEPAGE}, or pass --no-verify to accept these as they are.'
    )
  if mismatches:
    _log('checksums differ from the registered ones; accepting them (--no-verify):\n' + '\n'.join(mismatches))
  return actual


def _require_tensorflow() -> None:
  """TFDS's extractor and its repair of corrupt JPEGs use TensorFlow; only preparing needs it."""
  if importlib.util.find_spec('tensorflow') is None:
    raise PrepareError(
      "preparing the dataset needs TensorFlow: pip install 'tinycats[prepare]' (or pip install tensorflow-cpu)"
    )


def archive_urls() -> list[str]:
  """Where TFDS downloads the two archives from (its registered URLs)."""
  import tensorflow_datasets as tfds

  return sorted(tfds.builder_cls(NAME).url_infos)


def _download_failed(data_dir: str, urls: list[str], why: str) -> PrepareError:
  return PrepareError(
    f'could not download the archives ({why}): {" and ".join(urls)}. Download both into a folder DIR where there '
    f'is a network, then prepare offline with: {_prepare_command(data_dir)}'
  )


def _check_reachable(urls: list[str], data_dir: str, timeout: float = 15.0) -> None:
  """Fails at once, in one line, where there is no network; TFDS would retry for minutes, then raise
  requests' ConnectionError."""
  for url in urls:
    parts = urllib.parse.urlsplit(url)
    try:
      port = parts.port or (443 if parts.scheme == 'https' else 80)
      socket.create_connection((parts.hostname, port), timeout).close()
    except OSError as e:
      raise _download_failed(data_dir, urls, f'{parts.hostname}: {e.strerror or e}') from None


def _is_network_error(error: BaseException | None) -> bool:
  while error is not None:
    if isinstance(error, (ConnectionError, socket.gaierror, TimeoutError)) or 'ConnectionError' in type(error).__name__:
      return True
    error = error.__cause__ or error.__context__
  return False


def _builder_expecting(url_infos: dict, data_dir: str):
  """TFDS's builder, unchanged except that it expects the given archives' checksums.

  TFDS validates archives in manual_dir against the builder's `url_infos` (its checksums.tsv);
  an unregistered subclass with the same name and data files overrides just that.
  """
  import tensorflow_datasets as tfds

  base = tfds.builder_cls(NAME)
  with tfds.core.registered.skip_registration():

    class AcceptedArchives(base):
      name = NAME

  # TFDS's module: its README/citation and the recorded moduleName are the original builder's.
  AcceptedArchives.__module__ = base.__module__
  AcceptedArchives.url_infos = url_infos  # Replaces the classproperty that reads checksums.tsv.
  return AcceptedArchives(data_dir=data_dir)


def prepare(data_dir: str, archives: str | None = None, verify: bool = True) -> dict[str, int]:
  """Prepares TFDS oxford_iiit_pet as ArrayRecord in data_dir; returns examples per split.

  With `archives`, reads images.tar.gz and annotations.tar.gz from that folder (offline);
  otherwise TFDS downloads them. Downloads and extracted files go to a temporary folder inside
  data_dir that is removed afterwards; TFDS writes into an `incomplete.*` folder and renames it
  only on success, so a failed run leaves no half-prepared dataset.
  """
  data_dir = os.path.expanduser(data_dir)
  import tensorflow_datasets as tfds

  if is_prepared(data_dir):
    builder = tfds.builder(NAME, data_dir=data_dir)
    _log(f'{NAME} {builder.version} is already prepared in {builder.data_dir}; nothing to do')
    return _counts(builder)
  if archives is not None:
    archives = os.path.expanduser(archives)
    _check_missing(archives)
  else:
    _check_reachable(archive_urls(), data_dir)
  _require_tensorflow()
  url_infos = _check_archives(archives, verify) if archives is not None else None
  if url_infos is not None and not verify:
    builder = _builder_expecting(url_infos, data_dir)
  else:
    builder = tfds.builder(NAME, data_dir=data_dir)
  os.makedirs(data_dir, exist_ok=True)
  dataset_dir = os.path.join(data_dir, NAME)
  existed = os.path.isdir(dataset_dir)
  try:
    with tempfile.TemporaryDirectory(prefix='.tinycats-prepare-', dir=data_dir) as work:
      source = f'the archives in {archives}' if archives else 'archives TFDS downloads'
      _log(f'preparing {NAME} {builder.version} from {source} into {builder.data_dir} (scratch: {work})')
      config = tfds.download.DownloadConfig(manual_dir=archives, try_download_gcs=False)
      builder.download_and_prepare(download_dir=work, download_config=config, file_format='array_record')
  except BaseException as e:
    # TFDS removes its incomplete.* folder on failure but leaves the empty dataset folder.
    if not existed and os.path.isdir(dataset_dir) and not os.listdir(dataset_dir):
      os.rmdir(dataset_dir)
    if archives is None and isinstance(e, Exception) and _is_network_error(e):  # The network went mid-way.
      raise _download_failed(data_dir, archive_urls(), f'{type(e).__name__}: {str(e)[:200]}') from None
    raise
  counts = _counts(tfds.builder(NAME, data_dir=data_dir))
  _log(f'done: {counts}')
  return counts


def read_split(data_dir: str, split: str, skip_decoding: tuple[str, ...] = ()):
  """Random-access source of one split's records (dicts of NumPy values), without TensorFlow.

  Records have 'image' (uint8 HxWx3), 'label' (breed index into BREEDS), 'species' (index into
  SPECIES), 'file_name' (bytes, e.g. b'Bengal_1.jpg'), 'segmentation_mask' and 'head_bbox'.
  Features named in `skip_decoding` stay encoded bytes (the classifier never decodes the masks).
  """
  import tensorflow_datasets as tfds

  data_dir = os.path.expanduser(data_dir)
  if not is_prepared(data_dir):
    raise PrepareError(
      f'{NAME} is not prepared in {data_dir!r}. Prepare it once with:\n  {_prepare_command(data_dir)}\n'
      f'where DIR holds {" and ".join(ARCHIVES)} from {HOMEPAGE} (without --archives TFDS downloads them).'
    )
  builder = tfds.builder(NAME, data_dir=data_dir)
  file_format = builder.info.file_format
  if file_format is not None and file_format.value != 'array_record':
    raise PrepareError(
      f'{NAME} in {data_dir!r} was prepared as {file_format.value}, which needs TensorFlow to read; '
      f'prepare it as ArrayRecord into another data dir with:\n  {_prepare_command("NEW_DATA_DIR")}'
    )
  decoders = {name: tfds.decode.SkipDecoding() for name in skip_decoding} or None
  return builder.as_data_source(split=split, decoders=decoders)
