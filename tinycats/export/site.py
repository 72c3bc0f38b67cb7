"""`tinycats export site`: a static page that runs the exported ONNX models in a browser (`tinycats serve`,
export/serve.py, serves it).

The site is one folder that works offline and on any static host: the page (`index.html`, plain ES modules,
CSS; package data in `site_static/`), the ONNX files and `models.json` (everything the page knows about the
models comes from it), and onnxruntime-web's own files under `ort/`. onnxruntime-web is pinned here with its
npm registry hash; its tarball is downloaded once at export time into the tinycats cache folder (or read
from `--ort-dir`), checked, and only the three files the page loads are copied. Nothing is fetched from a CDN
when the page runs.

The site is built in a hidden folder beside `--out-dir` and renamed into place at the end
(`folders.staging_beside`), so a failure leaves the folder as it was. An existing `--out-dir` is replaced only
if it is empty or an earlier site.
"""

from __future__ import annotations

import base64
import functools
import hashlib
import json
import os
import shutil
import tarfile
import tempfile
import urllib.error
import urllib.request

from tinycats.errors import UserError
from tinycats.export import folders, manifest, onnx as onnx_export

# The pinned onnxruntime-web (1.24.2 and 1.30.0 load opset-23 models; 1.20.x does not): version and npm's
# dist.integrity of its tarball.
ORT_VERSION = '1.30.0'
ORT_INTEGRITY = 'sha512-q0y+JrrtukXSzsBWEMccVfqX25LRmosXHF+CaRJmg8pZClzcV7svNc4rKY3jL02Vb7QmRMDs1SigqR4CXAfKYQ=='
ORT_URL = f'https://registry.npmjs.org/onnxruntime-web/-/onnxruntime-web-{ORT_VERSION}.tgz'
# The ES-module build with the wasm and WebGPU (JSEP) backends, and the wasm module it loads.
ORT_FILES = ('ort.min.mjs', 'ort-wasm-simd-threaded.jsep.mjs', 'ort-wasm-simd-threaded.jsep.wasm')
ORT_FOLDER = 'ort'
STATIC = os.path.join(os.path.dirname(os.path.abspath(__file__)), 'site_static')
PAGE_FILES = ('index.html', 'app.js', 'noise.js', 'preprocess.js', 'sampler.js', 'style.css')
MARKER = 'tinycats-site.json'  # Says a folder is a site this command wrote (and may replace).
# The sections of models.json that belong to each model.
SECTIONS = {'classifier': ('classifier', 'breed_classes'), 'generator': ('generator', 'generator_breeds')}


def cache_folder() -> str:
  """Where downloads are kept: `TINYCATS_CACHE`, or ~/.cache/tinycats."""
  return os.path.expanduser(os.environ.get('TINYCATS_CACHE') or os.path.join('~', '.cache', 'tinycats'))


def _integrity(path: str) -> str:
  digest = hashlib.sha512()
  with open(path, 'rb') as f:
    for block in iter(functools.partial(f.read, 1 << 20), b''):
      digest.update(block)
  return 'sha512-' + base64.b64encode(digest.digest()).decode()


def _check_tarball(path: str) -> str:
  found = _integrity(path)
  if found != ORT_INTEGRITY:
    raise UserError(
      f"{path} is not onnxruntime-web {ORT_VERSION} (its {found[:20]}... differs from the registry's "
      f'{ORT_INTEGRITY[:20]}...); delete it, or download {ORT_URL} again'
    )
  return path


def download_ort(timeout: float = 60) -> str:
  """The pinned tarball, from the cache folder or downloaded there once (checked against its hash)."""
  folder = os.path.join(cache_folder(), 'onnxruntime-web')
  path = os.path.join(folder, os.path.basename(ORT_URL))
  if os.path.isfile(path) and _integrity(path) == ORT_INTEGRITY:
    return path
  os.makedirs(folder, exist_ok=True)
  fd, partial = tempfile.mkstemp(prefix='.download-', dir=folder)
  try:
    with os.fdopen(fd, 'wb') as f, urllib.request.urlopen(ORT_URL, timeout=timeout) as response:
      shutil.copyfileobj(response, f)
    _check_tarball(partial)
    os.replace(partial, path)
  except (urllib.error.URLError, OSError) as e:
    raise UserError(
      f'could not download onnxruntime-web {ORT_VERSION} from {ORT_URL} ({type(e).__name__}: {e}); '
      f'download it elsewhere and pass the folder holding it (or its unpacked dist/) with --ort-dir'
    ) from e
  finally:
    if os.path.exists(partial):
      os.remove(partial)
  return path


def _ort_source(ort_dir: str | None) -> tuple[str, str]:
  """('tarball', path) or ('dist', folder) holding the pinned onnxruntime-web."""
  if ort_dir is None:
    return 'tarball', download_ort()
  tarball = os.path.join(ort_dir, os.path.basename(ORT_URL))
  if os.path.isfile(tarball):
    return 'tarball', _check_tarball(tarball)
  for dist in (ort_dir, os.path.join(ort_dir, 'dist'), os.path.join(ort_dir, 'package', 'dist')):
    if all(os.path.isfile(os.path.join(dist, name)) for name in ORT_FILES):
      with open(os.path.join(dist, ORT_FILES[0]), 'rb') as f:
        banner = f.read(200).decode('utf-8', 'replace')  # '/*! ONNX Runtime Web v1.30.0 ...'
      if f'ONNX Runtime Web v{ORT_VERSION}\n' not in banner:
        raise UserError(f'{dist} is not onnxruntime-web {ORT_VERSION}; pass a folder holding {ORT_URL} or its dist/')
      return 'dist', dist
  raise UserError(
    f'--ort-dir {ort_dir} holds neither {os.path.basename(ORT_URL)} nor an unpacked dist/ with '
    f'{", ".join(ORT_FILES)}; download {ORT_URL} into it'
  )


def copy_ort(target: str, ort_dir: str | None = None) -> int:
  """Copies the page's onnxruntime-web files into `target`; their total size in bytes."""
  kind, source = _ort_source(ort_dir)
  os.makedirs(target, exist_ok=True)
  if kind == 'dist':
    for name in ORT_FILES:
      shutil.copyfile(os.path.join(source, name), os.path.join(target, name))
  else:
    with tarfile.open(source, 'r:gz') as archive:
      for name in ORT_FILES:
        member = archive.getmember(f'package/dist/{name}')
        with archive.extractfile(member) as f, open(os.path.join(target, name), 'wb') as out:
          shutil.copyfileobj(f, out)
  return sum(os.path.getsize(os.path.join(target, name)) for name in ORT_FILES)


def _read_spec(folder: str) -> dict | None:
  path = os.path.join(folder, 'models.json')
  return manifest.read_models_json(folder) if os.path.isfile(path) else None


def _model_folder(source: str, task: str, scratch: str, int8: bool) -> tuple[str, dict | None]:
  """(an ONNX export folder whose models.json has `task`, the export report if one was made).

  `source` is such a folder already, or anything `Classifier.load`/`Generator.load` takes (a workdir, a Hub
  export folder, a Hub repo id), which is exported here with `tinycats export onnx`.
  """
  spec = _read_spec(source) if os.path.isdir(source) else None
  if spec and task in spec.get('models', {}) and task in spec:
    return source, None
  folder = os.path.join(scratch, task)
  return folder, onnx_export.export_onnx(source, folder, int8=int8, task=task)


def _copy_model(folder: str, task: str, target: str, spec: dict) -> list[str]:
  """Copies one model's ONNX files and adds its sections of `folder`'s models.json to `spec`; the file names."""
  source = manifest.read_models_json(folder)
  entry = source['models'][task]
  main = entry['original'] if task == 'classifier' else entry  # The generator's entry is its float32 file.
  files = [main['path']] + ([entry['quantized']['path']] if 'quantized' in entry else [])
  for name in files:
    path = os.path.join(folder, name)
    if not os.path.isfile(path):
      raise UserError(f'{folder}/models.json names {name}, which is not there; export the model again')
    shutil.copyfile(path, os.path.join(target, name))
  spec.setdefault('models', {})[task] = entry
  for section in SECTIONS[task]:
    if section in source:
      spec[section] = source[section]
  if task in source.get('recommended', {}):
    spec.setdefault('recommended', {})[task] = source['recommended'][task]
  if task in source.get('tinycats', {}):
    spec.setdefault('tinycats', {})[task] = source['tinycats'][task]
  for key in ('version', 'generatedAt'):
    spec.setdefault(key, source.get(key))
  return files


def export_site(
  classifier: str,
  out_dir: str,
  *,
  generator: str | None = None,
  ort_dir: str | None = None,
  int8: bool = False,
) -> dict:
  """Writes the static site into `out_dir`: the page, the models (from workdirs or ONNX export folders,
  see `_model_folder`), one models.json for both, and onnxruntime-web. Returns a report."""
  if not folders.replaceable(out_dir, MARKER):
    raise UserError(f'{out_dir} exists and is not a tinycats site; choose a new or empty --out-dir')
  onnx_export.require_export_packages()
  sources = {'classifier': classifier, **({'generator': generator} if generator else {})}
  report = {'out_dir': os.path.abspath(out_dir), 'onnxruntime_web': ORT_VERSION, 'models': {}}
  with (
    folders.staging_beside(out_dir) as staged,
    tempfile.TemporaryDirectory(prefix='.exports-', dir=staged) as scratch,
  ):
    spec = {}
    files = []
    for task, source in sources.items():
      folder, exported = _model_folder(source, task, scratch, int8)
      files += _copy_model(folder, task, staged, spec)
      report['models'][task] = {'source': source, 'exported': exported is not None}
    spec['runtime'] = {
      'name': 'ONNX Runtime Web',
      'executionProviders': ['webgpu', 'wasm'],
      'recommendedProvider': 'wasm',
      **manifest.WEB_RUNTIME,
    }
    spec['site'] = {
      'onnxruntime-web': ORT_VERSION,
      'files': [f'{ORT_FOLDER}/{name}' for name in ORT_FILES],
      'backend': 'WebGPU when an adapter is obtained, else wasm (threads when cross-origin isolated)',
    }
    with open(os.path.join(staged, 'models.json'), 'w') as f:
      json.dump(spec, f, indent=2)
    for name in PAGE_FILES:
      shutil.copyfile(os.path.join(STATIC, name), os.path.join(staged, name))
    report['onnxruntime_web_bytes'] = copy_ort(os.path.join(staged, ORT_FOLDER), ort_dir)
    report['files'] = sorted(PAGE_FILES + ('models.json', MARKER)) + sorted(files)
    with open(os.path.join(staged, MARKER), 'w') as f:
      json.dump({'onnxruntime-web': ORT_VERSION, 'sources': sources}, f, indent=2)
  report['bytes'] = sum(
    os.path.getsize(os.path.join(folder, name)) for folder, _, names in os.walk(out_dir) for name in names
  )
  return report
