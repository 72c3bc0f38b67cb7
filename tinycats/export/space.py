"""`tinycats export space`: a site from `tinycats export site` published as a static Hugging Face Space.

The Space is the site's files as they are (the ONNX models and onnxruntime-web's wasm module go through the Hub's
large-file path) plus a README.md whose YAML front matter configures it: `sdk: static`, `app_file: index.html`,
and the headers that make the page cross-origin isolated (wasm threads), as `tinycats serve` sends them. It is
uploaded in one commit with the plumbing `export hub` uses (`hub_upload`: token, errors, offline), which also
deletes the files an older site left that this one has not (an int8 model exported before, a dropped generator).
"""

from __future__ import annotations

import json
import os
import shutil
import tempfile

from huggingface_hub import SpaceCardData, metadata_load

from tinycats.errors import UserError
from tinycats.export import card, hub_upload, manifest, onnx as onnx_export, site as site_export

# The Hub's thumbnail colours are one of: red, yellow, green, blue, indigo, purple, pink, gray.
LOOK = {'emoji': '🐈', 'colorFrom': 'yellow', 'colorTo': 'purple'}
HEADERS = {  # What `tinycats serve` sends: cross-origin isolation, so wasm may use threads.
  'cross-origin-embedder-policy': 'require-corp',
  'cross-origin-opener-policy': 'same-origin',
  'cross-origin-resource-policy': 'cross-origin',
}


def site_files(site: str) -> list[str]:
  """The files of the site in `site` (relative, '/'-separated): the page, models.json, the models it names,
  onnxruntime-web's files and the marker. A folder that is not a tinycats site, or lacks one of them, is refused."""
  if not os.path.isfile(os.path.join(site, site_export.MARKER)):
    raise UserError(
      f'{site} is not a tinycats site (it has no {site_export.MARKER}); make one with '
      f'`tinycats export site --classifier DIR --out-dir {site}`'
    )
  spec = manifest.read_models_json(site)
  models = [  # A classifier's 'original' and 'quantized' files; a generator's own file and its 'quantized'.
    part['path']
    for entry in spec.get('models', {}).values()
    for part in (entry, entry.get('original'), entry.get('quantized'))
    if part and 'path' in part
  ]
  files = [*site_export.PAGE_FILES, 'models.json', site_export.MARKER, *spec.get('site', {}).get('files', []), *models]
  outside = [name for name in files if os.path.isabs(name) or '..' in name.replace('\\', '/').split('/')]
  if outside:
    raise UserError(f'{site}/models.json names files outside the site ({", ".join(outside)}); export it again')
  missing = [name for name in files if not os.path.isfile(os.path.join(site, name))]
  if missing:
    raise UserError(f'{site} is an incomplete site ({", ".join(missing)} missing); export it again')
  return sorted(files)


def stale_files(files: list[str]) -> list[str]:
  """The names a site can hold that this one does not: left in the Space, an older model would sit beside it."""
  possible = {
    *site_export.PAGE_FILES,
    'models.json',
    site_export.MARKER,
    *(f'{site_export.ORT_FOLDER}/{name}' for name in site_export.ORT_FILES),
    *(name for names in onnx_export.FILES.values() for name in names),
  }
  return sorted(possible - set(files))


def _source_license(source: str) -> str | None:
  """The licence a model source names: a Hub export folder's card, or a workdir's data (Oxford-IIIT Pet's)."""
  readme, config = (os.path.join(source, name) for name in ('README.md', 'config.json'))
  if os.path.isfile(readme) and (card_license := (metadata_load(readme) or {}).get('license')):
    return card_license
  if os.path.isfile(config):
    with open(config) as f:
      saved = json.load(f)
    data = saved.get('data') or saved.get('run_config', {}).get('data', {})
    if data.get('source') == 'tfds':
      return card.DEFAULT_LICENSE  # The weights derive from the data: its licence.
  return None


def site_license(site: str) -> str | None:
  """The licence of the site's models, where the sources `export site` recorded say it (and agree); else None."""
  with open(os.path.join(site, site_export.MARKER)) as f:
    sources = json.load(f).get('sources', {})
  found = {_source_license(source) if os.path.isdir(source) else None for source in sources.values()}
  return found.pop() if len(found) == 1 else None


def readme(site: str, repo_id: str, license_id: str | None) -> str:
  """The Space's README.md: the front matter the Hub reads (sdk, app file, look, headers, licence) and a text."""
  spec = manifest.read_models_json(site)
  generates = 'generator' in spec.get('models', {})
  name = repo_id.split('/')[-1]
  data = SpaceCardData(
    title=name,
    sdk='static',
    app_file='index.html',
    license=license_id,
    tags=['tinycats', 'onnx', 'onnxruntime-web'],
    **LOOK,
    pinned=False,
    short_description=f'Classify a photo{" and generate one" if generates else ""} in the browser',
    custom_headers=HEADERS,
  )
  classes = spec.get('classifier', {}).get('output', {}).get('classes', [])
  classes = ', '.join(classes) if len(classes) <= 15 else f'{len(classes)} classes'
  version = spec.get('site', {}).get('onnxruntime-web', site_export.ORT_VERSION)
  return (
    f'---\n{data.to_yaml()}\n---\n\n# {name}\n\n'
    f'A tinycats page: it classifies a photo ({classes})'
    + (' and generates a picture of a class' if generates else '')
    + f' with ONNX models running in your browser (onnxruntime-web {version}, WebGPU or wasm); nothing is sent '
    'to a server. Made by `tinycats export site` and published by `tinycats export space`.\n\n'
    'To run it on your own machine (offline too):\n\n'
    f'```bash\nhf download {repo_id} --repo-type space --local-dir page\ntinycats serve page\n```\n'
  )


def _stage(site: str, files: list[str], folder: str) -> None:
  """The site's files in `folder` (hard links where the file system allows, else copies)."""
  for name in files:
    target = os.path.join(folder, name)
    os.makedirs(os.path.dirname(target), exist_ok=True)
    try:
      os.link(os.path.join(site, name), target)
    except OSError:
      shutil.copyfile(os.path.join(site, name), target)


def export_space(
  site: str,
  repo_id: str,
  *,
  private: bool = False,
  endpoint: str | None = None,
  license_id: str | None = None,
) -> dict:
  """Publishes the site in `site` as the static Space `repo_id` (created if needed); returns a report."""
  hub_upload.check_repo_id(repo_id)
  files = site_files(site)
  serve = f'tinycats serve {site}'
  token = hub_upload.hub_token(f'serve the site yourself: {serve}')  # Before any work.
  license_id = license_id or site_license(site)
  with tempfile.TemporaryDirectory(prefix='tinycats-space-') as folder:
    _stage(site, files, folder)
    with open(os.path.join(folder, 'README.md'), 'w', encoding='utf-8') as f:
      f.write(readme(site, repo_id, license_id))
    url = hub_upload.upload(
      folder,
      repo_id,
      token=token,
      files=files + ['README.md'],
      stale=stale_files(files),
      private=private,
      endpoint=endpoint,
      repo_type='space',
      space_sdk='static',
      way_out=f'the site works offline as it is: {serve}',
    )
  return {
    'repo_id': repo_id,
    'url': url,
    'space': f'{hub_upload.endpoint_url(endpoint)}/spaces/{repo_id}',
    'files': files + ['README.md'],
    'license': license_id,
    'bytes': sum(os.path.getsize(os.path.join(site, name)) for name in files),
  }
