"""Decode every image once into a uint8 array of fixed-size canvases, kept on disk and reused.

Training then never decodes JPEGs: batches are slices of this array, and augmentation runs on
the device (see `augment.py`). Each canvas holds the whole picture, its longer side resized to
the cache size, at the top-left (zero padding elsewhere), so that crops can come from all of it.
The cache lives beside the data (in the TFDS data dir, or a hidden folder inside an image
folder) so that every later run on that data reuses it. A cache is a folder: `images.npy`
(N, S, S, 3) uint8, `sizes.npy` (N, 2) int32 (each picture's height and width on its canvas), one
`<field>.npy` int32 per label field and `meta.json`; it is written to a temporary folder and
renamed, so an interrupted build leaves nothing half-written. Images that fail to decode are
skipped with a warning naming them, and counted.

`read_image_file` is the one reader of image files, for the cache and for prediction alike: EXIF
orientation applied, 16-bit and float pictures scaled to 8 bits, transparency composited on white,
a huge JPEG decoded at a reduced scale, and a picture above `MAX_PIXELS` refused.
"""

from __future__ import annotations

import concurrent.futures
import contextlib
import dataclasses
import hashlib
import json
import math
import os
import shutil
import sys
import threading
import uuid
import warnings
from collections.abc import Callable, Sequence
from typing import BinaryIO

import numpy as np
from PIL import Image, ImageOps
from tqdm import tqdm

from tinycats import files
from tinycats.errors import UserError

# Part of every cache's key: a cache of another layout or reader is not reused (1: centre-cropped squares;
# 2: EXIF orientation, 16-bit scaling and transparency ignored; 3: no checksums of its own files).
FORMAT = 4
# The most pixels a picture may decode to (after a JPEG's reduced-scale decoding): about 150 MB as RGB.
MAX_PIXELS = 50_000_000
# Where transparent pixels end up: white, as a browser shows a transparent picture on a page.
BACKGROUND = (255, 255, 255)
BUILDING, DAMAGED = '.tmp-', '.damaged-'  # Suffixes of a cache folder being built and of one set aside.
_OPEN_LOCK = threading.Lock()  # Guards the moment Pillow's own pixel limit is lifted (see `_open`).

Loader = Callable[[], tuple[np.ndarray | Image.Image, dict[str, int]]]


@dataclasses.dataclass
class CachedSplit:
  images: np.ndarray  # (N, S, S, 3) uint8, memory-mapped.
  sizes: np.ndarray  # (N, 2) int32: each picture's (height, width) at the top-left of its canvas.
  labels: dict[str, np.ndarray]  # field -> (N,) int32
  names: list[str]  # Source names of the N kept images.
  skipped: list[str]  # Names of images that could not be decoded.
  fingerprint: str | None = None  # `content_fingerprint` of the kept images; None for a cache older than it.

  def __len__(self):
    return len(self.images)


def fit(image: np.ndarray | Image.Image, size: int) -> tuple[np.ndarray, tuple[int, int]]:
  """The whole picture, longer side resized to `size` (antialiased, aspect kept), at the top-left of a
  (size, size, 3) uint8 zero canvas, and its (height, width) there.

  The one host-side resize, shared by the cache and by prediction so they see the same pixels.
  """
  if not isinstance(image, Image.Image):
    array = np.asarray(image)
    if array.ndim == 3 and array.shape[-1] == 1:
      array = array[..., 0]
    image = Image.fromarray(array)
  image = to_rgb(image)
  w, h = image.size
  if w == 0 or h == 0:
    raise ValueError('empty image')
  scale = size / max(w, h)
  nw, nh = min(size, max(1, round(w * scale))), min(size, max(1, round(h * scale)))
  canvas = np.zeros((size, size, 3), np.uint8)
  canvas[:nh, :nw] = np.asarray(image.resize((nw, nh), Image.BILINEAR, reducing_gap=None), dtype=np.uint8)
  return canvas, (nh, nw)


def to_rgb(image: Image.Image) -> Image.Image:
  """8-bit RGB as a viewer shows the picture; `convert('RGB')` alone clips 16-bit pictures to white and
  drops transparency, revealing whatever colour the transparent pixels happen to hold.

  16-bit and 32-bit integer pictures are scaled from 0..65535 (32-bit ones above that from their full
  range), float ones from 0..1 (or 0..255 when they exceed 1); transparency goes on `BACKGROUND`.
  """
  if image.mode == 'RGB' and 'transparency' not in image.info:
    return image
  if image.mode.startswith('I') or image.mode == 'F':
    array = np.asarray(image, np.float64)
    if image.mode == 'F':
      top = 1.0 if array.size == 0 or np.nanmax(array) <= 1.0 else 255.0
    else:
      top = 65535.0 if array.size == 0 or array.max() <= 65535 else 2.0**32 - 1
    array = np.nan_to_num(np.clip(array / top, 0.0, 1.0)) * 255.0
    return Image.fromarray(np.round(array).astype(np.uint8)).convert('RGB')
  if image.mode in ('RGBA', 'LA', 'PA', 'La', 'RGBa') or 'transparency' in image.info:
    image = image.convert('RGBA')
    return Image.alpha_composite(Image.new('RGBA', image.size, BACKGROUND + (255,)), image).convert('RGB')
  return image.convert('RGB')


def _open(path: str | BinaryIO) -> Image.Image:
  """`Image.open` without Pillow's own pixel check at full size (a warning, or an error at twice its
  limit): `read_image_file` applies `MAX_PIXELS` to what is decoded, after a JPEG's reduction."""
  with _OPEN_LOCK:
    limit, Image.MAX_IMAGE_PIXELS = Image.MAX_IMAGE_PIXELS, None
    try:
      return Image.open(path)
    finally:
      Image.MAX_IMAGE_PIXELS = limit


def read_image_file(path: str | BinaryIO, size: int | None = None) -> Image.Image:
  """Decodes an image file whole (errors surface here, not later) as 8-bit RGB, upright (EXIF orientation).

  With `size` (the longer side the caller will resize to), a JPEG is decoded at the smallest of 1/2,
  1/4, 1/8 scale that still covers it (`Image.draft`): a 12000x12000 photo costs 1500x1500 at 320.
  A picture still above `MAX_PIXELS` raises ValueError before it is decoded.
  """
  with _open(path) as image:
    if size and image.format == 'JPEG':
      scale = size / max(image.size)
      if scale < 1:
        image.draft('RGB', (math.ceil(image.width * scale), math.ceil(image.height * scale)))
    if image.width * image.height > MAX_PIXELS:
      raise ValueError(
        f'{image.width}x{image.height} pixels, above the limit of {MAX_PIXELS:,} (tinycats.data.cache.MAX_PIXELS); '
        'shrink the picture'
      )
    image.load()
    return to_rgb(ImageOps.exif_transpose(image))


def content_fingerprint(rows) -> str:
  """What a split holds, in order: each kept image's name, a SHA-256 of its decoded canvas and its labels.

  Decoded pixels rather than file sizes and times: a copy, a `touch` or a moved data folder keeps it, and
  other pictures under the same names change it. It is computed while decoding, so it costs no extra read.
  """
  return hashlib.sha256(json.dumps(rows).encode()).hexdigest()


def cache_path(cache_dir: str, key: dict) -> str:
  digest = hashlib.sha256(json.dumps(dict(key, format=FORMAT), sort_keys=True).encode()).hexdigest()[:16]
  return os.path.join(cache_dir, f'{key.get("source", "data")}-{key.get("split", "split")}-{key["size"]}-{digest}')


class CacheDamaged(Exception):
  """A cache folder whose files are not the ones it was built with (a disk error, a careless hand)."""


def file_digests(paths) -> list[str]:
  """SHA-256 of each file's bytes, read in full (threads: hashlib releases the GIL; about 1 GB/s a core).

  Bytes, not sizes and modification times: an edit that keeps both (a picture inverted, its time restored)
  still makes another cache and another split.
  """

  def digest(path):
    with open(path, 'rb') as f:
      return hashlib.file_digest(f, 'sha256').hexdigest()

  with concurrent.futures.ThreadPoolExecutor(max_workers=min(8, (os.cpu_count() or 1) + 1)) as pool:
    return list(pool.map(digest, paths))


def _checksums(path: str) -> dict[str, str]:
  """SHA-256 of each array file of a cache folder (a second for a Pets split at 320 px)."""
  names = sorted(name for name in os.listdir(path) if name.endswith('.npy'))
  return dict(zip(names, file_digests([os.path.join(path, name) for name in names])))


def load(path: str) -> CachedSplit:
  """The cache at `path`, after checking every file against the checksums it was built with (CacheDamaged)."""
  try:
    with open(os.path.join(path, 'meta.json')) as f:
      meta = json.load(f)
    expected = meta['checksums']
  except (OSError, ValueError, KeyError, TypeError) as e:
    raise CacheDamaged(f'meta.json is unreadable ({type(e).__name__}: {e})') from None
  found = _checksums(path)
  if wrong := sorted(name for name in expected.keys() | found.keys() if expected.get(name) != found.get(name)):
    raise CacheDamaged(f'{", ".join(wrong)} not as built (checksum)')
  labels = {field: np.load(os.path.join(path, f'{field}.npy')) for field in meta['label_fields']}
  return CachedSplit(
    np.load(os.path.join(path, 'images.npy'), mmap_mode='r'),
    np.load(os.path.join(path, 'sizes.npy')),
    labels,
    meta['names'],
    meta['skipped'],
    meta.get('fingerprint'),
  )


def build(path: str, names: Sequence[str], loaders: Sequence[Loader], key: dict) -> CachedSplit:
  """Decodes `loaders` (in threads: PIL releases the GIL) straight into a memory-mapped file at `path`.

  Peak memory stays near one image per thread whatever the split's size: each canvas is written
  to the file as soon as it is decoded.
  """
  n, size = len(loaders), key['size']
  folder, name = os.path.split(path)
  os.makedirs(folder, exist_ok=True)
  with files.working_folder(folder, name + BUILDING) as tmp:  # Removed if the build fails, or by a later one.
    images = np.lib.format.open_memmap(os.path.join(tmp, 'images.npy'), 'w+', np.uint8, (n, size, size, 3))
    sizes = np.zeros((n, 2), np.int32)
    labels: dict[str, np.ndarray] = {}
    ok = np.zeros(n, bool)
    skipped, digests = [], [b''] * n

    def decode(i):
      image, fields = loaders[i]()
      canvas, fitted = fit(image, size)
      return (canvas, fitted), fields, hashlib.sha256(canvas.tobytes()).digest()

    with concurrent.futures.ThreadPoolExecutor(max_workers=min(8, (os.cpu_count() or 1) + 1)) as pool:
      futures = {pool.submit(decode, i): i for i in range(n)}
      for future in tqdm(
        concurrent.futures.as_completed(futures),
        total=n,
        desc=f'decoding {key.get("split", "")}',
        unit='img',
        file=sys.stderr,
        mininterval=1.0,
        disable=n < 64,
      ):
        i = futures.pop(future)  # Drop the reference: the decoded canvas lives only in the file.
        try:
          (canvas, sizes[i]), fields, digests[i] = future.result()
        except Exception as error:  # pylint: disable=broad-except  # A bad image must not end the run.
          skipped.append(names[i])
          warnings.warn(f'skipping unreadable image {names[i]}: {type(error).__name__}: {error}', stacklevel=2)
          continue
        images[i] = canvas
        ok[i] = True
        for field, value in fields.items():
          labels.setdefault(field, np.full(n, -1, np.int32))[i] = value
    if skipped:
      print(f'skipped {len(skipped)} unreadable image(s) of {n}', file=sys.stderr)
    if not ok.any():
      raise UserError(f'no readable images among {n} in {key}')
    if not ok.all():  # Compact, a chunk at a time, into a second file.
      kept = np.lib.format.open_memmap(os.path.join(tmp, 'kept.npy'), 'w+', np.uint8, (int(ok.sum()), size, size, 3))
      rows = np.flatnonzero(ok)
      for start in range(0, len(rows), 256):
        kept[start : start + 256] = images[rows[start : start + 256]]
      kept.flush()
      del images, kept
      os.replace(os.path.join(tmp, 'kept.npy'), os.path.join(tmp, 'images.npy'))
    else:
      images.flush()
      del images
    np.save(os.path.join(tmp, 'sizes.npy'), sizes[ok])
    for field, values in labels.items():
      np.save(os.path.join(tmp, f'{field}.npy'), values[ok])
    meta = dict(
      key=key,
      format=FORMAT,
      checksums=_checksums(tmp),
      names=[name for name, keep in zip(names, ok) if keep],
      skipped=sorted(skipped),
      label_fields=sorted(labels),
      fingerprint=content_fingerprint(
        [
          (name, digest.hex(), {f: int(v[i]) for f, v in labels.items()})
          for i, (name, digest) in enumerate(zip(names, digests))
          if ok[i]
        ]
      ),
    )
    with open(os.path.join(tmp, 'meta.json'), 'w') as f:
      json.dump(meta, f)
    try:
      os.replace(tmp, path)
    except OSError:  # Another process finished the same cache first; theirs is as good as ours.
      if not os.path.isfile(os.path.join(path, 'meta.json')):
        raise
  return load(path)


def get_or_build(cache_dir: str, key: dict, names: Sequence[str], loaders: Sequence[Loader]) -> CachedSplit:
  """The cached split for `key` (which must identify the images, their content and the size), built once."""
  path = cache_path(cache_dir, key)
  for suffix in (BUILDING, DAMAGED):  # What builds and repairs killed mid-way left.
    files.remove_abandoned(cache_dir, os.path.basename(path) + suffix)
  if os.path.isdir(path):
    try:
      return load(path)
    except CacheDamaged as e:
      warnings.warn(f'the cache {path} is damaged: {e}; decoding the pictures again', stacklevel=2)
      aside = f'{path}{DAMAGED}{uuid.uuid4().hex[:8]}'  # One rename: another process sees it whole or gone.
      with contextlib.suppress(FileNotFoundError):
        os.rename(path, aside)
      shutil.rmtree(aside, ignore_errors=True)
  os.makedirs(cache_dir, exist_ok=True)
  return build(path, names, loaders, key)
