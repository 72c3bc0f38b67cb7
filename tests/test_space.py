"""`tinycats export space`: a site published as a static Hugging Face Space on the fake Hub (tests/fake_hub.py,
answering large and binary files with Git LFS, as the Hub does), downloaded back with `snapshot_download` and
served by `tinycats serve`'s server: the page from the Space passes test_site.py's browser checks.
"""

from __future__ import annotations

import contextlib
import io
import json
import os
import shutil

import pytest
import test_site
import yaml
from fake_hub import FakeHub
from test_site import GENERATE_CASES, check_classifies, check_generates, open_page, serving

from tinycats import cli
from tinycats.errors import UserError
from tinycats.export import site, space

TOKEN = 'hf_test_token'
REPO = 'someone/tinycats-page'
browser = test_site.browser  # Chromium through Playwright (skips without it, unless TINYCATS_REQUIRE_BROWSER=1).
site_dir = test_site.site_dir  # The site of the suite's tiny runs, built by `tinycats export site`.


@pytest.fixture(scope='module')
def hub_server():
  """The fake Hub, with the Hub's large-file path (Git LFS; the client is told not to use Xet, which it lacks)."""
  import huggingface_hub.constants

  with FakeHub(token=TOKEN, lfs=True) as server, pytest.MonkeyPatch.context() as mp:
    mp.setattr(huggingface_hub.constants, 'HF_HUB_DISABLE_XET', True)
    mp.setenv('HF_TOKEN', TOKEN)
    yield server


def _main(args: list[str], capsys) -> tuple[int, str, str]:
  with pytest.raises(SystemExit) as done:
    cli.main(args)
  captured = capsys.readouterr()
  return done.value.code, captured.out, captured.err


@pytest.fixture(scope='module')
def published(site_dir, hub_server):
  """`tinycats export space` of the site to the fake Hub: (exit code, the JSON report, stderr). Module scope has
  no capsys: stdout and stderr are redirected here."""
  out, err = io.StringIO(), io.StringIO()
  with contextlib.redirect_stdout(out), contextlib.redirect_stderr(err), pytest.raises(SystemExit) as done:
    cli.main(['export', 'space', '--site', site_dir, '--repo-id', REPO, '--endpoint', hub_server.endpoint])
  return done.value.code, json.loads(out.getvalue().strip().splitlines()[-1]), err.getvalue()


def front_matter(text: str) -> dict:
  assert text.startswith('---\n')
  return yaml.safe_load(text.split('---\n')[1])


def test_the_space_is_the_site_with_a_static_space_readme(published, site_dir, hub_server):
  code, report, line = published
  assert code == 0, line
  assert report['space'] == f'{hub_server.endpoint}/spaces/{REPO}' and report['space'] in line
  assert f'tinycats serve {site_dir}' in line  # The offline way is named even when the upload worked.
  key = f'spaces/{REPO}'
  assert hub_server.sdk[key] == 'static' and not hub_server.private[key]
  files = hub_server.repos[key]
  on_disk = {
    os.path.relpath(os.path.join(folder, name), site_dir).replace(os.sep, '/')
    for folder, _, names in os.walk(site_dir)
    for name in names
  }
  assert set(files) == on_disk | {'README.md'} == set(report['files'])
  for name in on_disk:
    assert files[name] == open(os.path.join(site_dir, name), 'rb').read(), name
  ((_, summary, added, deleted),) = [c for c in hub_server.commits if c[0] == key]  # One commit.
  assert set(added) == set(files) and deleted == [] and 'site' in summary
  # The models and onnxruntime-web's wasm module went through the Hub's large-file path; the page's text did not.
  assert {'cats.onnx', 'generator.onnx', 'ort/ort-wasm-simd-threaded.jsep.wasm'} <= hub_server.lfs_files[key]
  assert not {'index.html', 'app.js', 'models.json', 'README.md'} & hub_server.lfs_files[key]
  readme = files['README.md'].decode()
  meta = front_matter(readme)
  assert {k: meta[k] for k in ('title', 'sdk', 'app_file', 'pinned')} == {
    'title': 'tinycats-page',
    'sdk': 'static',
    'app_file': 'index.html',
    'pinned': False,
  }
  colours = {'red', 'yellow', 'green', 'blue', 'indigo', 'purple', 'pink', 'gray'}  # The Hub's thumbnail colours.
  assert meta['colorFrom'] in colours and meta['colorTo'] in colours and meta['emoji']
  assert len(meta['short_description']) <= 60
  assert meta['custom_headers'] == {  # What `tinycats serve` sends: cross-origin isolated, so wasm uses threads.
    'cross-origin-embedder-policy': 'require-corp',
    'cross-origin-opener-policy': 'same-origin',
    'cross-origin-resource-policy': 'cross-origin',
  }
  # The suite's runs: a classifier of an image folder and a generator from an ONNX folder: no licence is known.
  assert 'license' not in meta and report['license'] is None
  assert f'hf download {REPO} --repo-type space' in readme and 'tinycats serve' in readme


@pytest.mark.browser
def test_the_space_downloaded_and_served_passes_the_browser_checks(
  published, browser, hub_server, learning_folder, generator_run, tmp_path, monkeypatch
):
  from huggingface_hub import snapshot_download

  monkeypatch.setenv('HF_HUB_CACHE', str(tmp_path / 'hub-cache'))
  folder = str(tmp_path / 'space')
  snapshot_download(REPO, repo_type='space', endpoint=hub_server.endpoint, token=TOKEN, local_dir=folder)
  assert os.path.isfile(os.path.join(folder, site.MARKER))
  with serving(folder) as url, open_page(browser, url) as page:
    check_classifies(page, folder, learning_folder, tmp_path, screenshots=False)
    check_generates(page, generator_run, tmp_path, screenshots=False, cases=GENERATE_CASES[:1])  # The page works.


def test_publishing_again_deletes_what_an_older_site_left_and_nothing_else(site_dir, hub_server):
  key = 'spaces/someone/again'
  hub_server.repos[key] = {'cats_quantized.onnx': b'an int8 model of an older site', 'notes.md': b'the owner'}
  hub_server.private[key], hub_server.sdk[key] = False, 'static'
  report = space.export_space(site_dir, 'someone/again', endpoint=hub_server.endpoint, private=True, license_id='mit')
  assert set(hub_server.repos[key]) == set(report['files']) | {'notes.md'}
  ((_, _, _, deleted),) = [c for c in hub_server.commits if c[0] == key]
  assert deleted == ['cats_quantized.onnx'] and hub_server.private[key]
  assert front_matter(hub_server.repos[key]['README.md'].decode())['license'] == 'mit'


def test_refusals_and_failures_are_one_line_with_the_way_out(site_dir, hub_server, tmp_path, capsys, monkeypatch):
  mine = tmp_path / 'mine'
  mine.mkdir()
  (mine / 'index.html').write_text('my own page')
  endpoint = ['--endpoint', hub_server.endpoint]
  code, _, err = _main(['export', 'space', '--site', str(mine), '--repo-id', REPO, *endpoint], capsys)
  assert code == 2 and 'not a tinycats site' in err and 'tinycats export site' in err and err.count('\n') == 1
  incomplete = tmp_path / 'incomplete'
  shutil.copytree(site_dir, incomplete)
  os.remove(incomplete / 'cats.onnx')
  with pytest.raises(UserError, match=r'incomplete site \(cats.onnx missing\)'):
    space.export_space(str(incomplete), REPO, endpoint=hub_server.endpoint)
  spec = json.loads((incomplete / 'models.json').read_text())
  spec['models']['classifier']['original']['path'] = '../cats.onnx'  # A models.json naming a file outside.
  (incomplete / 'models.json').write_text(json.dumps(spec))
  with pytest.raises(UserError, match='outside the site'):
    space.export_space(str(incomplete), REPO, endpoint=hub_server.endpoint)
  code, _, err = _main(['export', 'space', '--site', site_dir, '--repo-id', 'not a repo id', *endpoint], capsys)
  assert code == 2 and 'not a Hub repo id' in err
  before = len(hub_server.requests)
  monkeypatch.setenv('HF_TOKEN', 'hf_wrong')
  code, _, err = _main(['export', 'space', '--site', site_dir, '--repo-id', 'someone/other', *endpoint], capsys)
  assert code == 2 and 'the token is not valid' in err and f'tinycats serve {site_dir}' in err
  assert err.count('\n') == 1 and not any('/commit/' in r for r in hub_server.requests[before:])
  monkeypatch.setenv('HF_TOKEN', TOKEN)
  offline = ['--endpoint', 'http://127.0.0.1:9']  # Nothing listens there: no network.
  code, _, err = _main(['export', 'space', '--site', site_dir, '--repo-id', REPO, *offline], capsys)
  assert code == 2 and 'could not reach http://127.0.0.1:9' in err and err.count('\n') == 1
  assert f'the site works offline as it is: tinycats serve {site_dir}' in err
  import huggingface_hub.constants

  monkeypatch.delenv('HF_TOKEN')
  monkeypatch.setattr(huggingface_hub.constants, 'HF_TOKEN_PATH', str(tmp_path / 'no-login' / 'token'))
  before = len(hub_server.requests)
  code, _, err = _main(['export', 'space', '--site', site_dir, '--repo-id', REPO, *endpoint], capsys)
  assert code == 2 and 'HF_TOKEN' in err and f'tinycats serve {site_dir}' in err
  assert hub_server.requests[before:] == []  # Stopped before any request.


def test_the_licence_is_the_one_the_sites_models_name(tmp_path):
  def source(name: str, config: dict | None = None, card_license: str | None = None) -> str:
    folder = tmp_path / name
    folder.mkdir()
    if config is not None:
      (folder / 'config.json').write_text(json.dumps(config))
    if card_license:
      (folder / 'README.md').write_text(f'---\nlicense: {card_license}\nlibrary_name: tinycats\n---\n# card\n')
    return str(folder)

  pets = source('pets-workdir', {'data': {'source': 'tfds'}})
  folder = source('folder-workdir', {'data': {'source': 'folder'}})
  hub_export = source('hub-export', {'run_config': {'data': {'source': 'folder'}}}, card_license='apache-2.0')
  pets_export = source('pets-export', {'run_config': {'data': {'source': 'tfds'}}})

  def licence(**sources) -> str | None:
    (tmp_path / 'site').mkdir(exist_ok=True)
    (tmp_path / 'site' / site.MARKER).write_text(json.dumps({'sources': sources}))
    return space.site_license(str(tmp_path / 'site'))

  assert licence(classifier=pets) == licence(classifier=pets, generator=pets_export) == 'cc-by-sa-4.0'
  assert licence(classifier=hub_export) == 'apache-2.0'
  assert licence(classifier=folder) is None and licence(classifier='someone/on-the-hub') is None
  assert licence(classifier=pets, generator=hub_export) is None  # They disagree: no licence is claimed.
