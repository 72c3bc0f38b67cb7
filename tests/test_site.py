"""The static site (`tinycats export site`, `tinycats serve`) in a real browser, against Python.

Headless Chromium (Debian's /usr/bin/chromium, driven by Playwright for Python) opens the site served on
127.0.0.1 by the server `tinycats serve` uses, classifies two photos and generates three samples (two with
guidance intervals): the probabilities must match Python ONNX Runtime on Python's preprocessing within 1e-4,
the samples `Generator.sample` with the page's noise (`flow.browser_noise`) within one grey level. A second site
holds configs/dit.py's own generator (its block) with an int8 file: float32 as above, int8 chosen in the page
against the library's sampler running that file in Python ONNX Runtime. Without Chromium
or Playwright these tests skip, unless TINYCATS_REQUIRE_BROWSER=1 (as `.ci/run` sets), where they fail.
The onnxruntime-web tarball is downloaded once per session, or read from TINYCATS_ORT_DIR (an --ort-dir).
TINYCATS_SCREENSHOTS=DIR keeps the page's screenshots there (docs/site_*.png were made so).
"""

from __future__ import annotations

import contextlib
import json
import os
import shutil
import threading
import urllib.error
import urllib.request

import jax
import jax.numpy as jnp
import numpy as np
import pytest
from conftest import DIT_TINY, once_per_session, tiny_config
from PIL import Image

from tinycats import Generator, cli, flow
from tinycats.data import augment, cache
from tinycats.errors import UserError
from tinycats.export import onnx as onnx_export, serve, site

ort = pytest.importorskip('onnxruntime', reason="the export extra (pip install -e '.[export]') is needed")

CHROMIUM = os.environ.get('TINYCATS_CHROMIUM', '/usr/bin/chromium')
TIMEOUT_MS = 60_000


def _ort_args() -> list[str]:
  folder = os.environ.get('TINYCATS_ORT_DIR')
  return ['--ort-dir', folder] if folder else []


@pytest.fixture(scope='session')
def site_dir(folder_run, generator_run, tmp_path_factory):
  """The site of the suite's tiny runs: the classifier straight from its workdir, the generator from an ONNX
  export folder (both kinds of source), built by the CLI once per session (test_space publishes it too)."""

  def build(folder: str) -> dict:
    os.makedirs(folder, exist_ok=True)
    generator_export = os.path.join(folder, 'generator-export')
    onnx_export.export_onnx(generator_run[0], generator_export)
    args = ['export', 'site', '--classifier', folder_run[0], '--generator', generator_export, '--out-dir']
    with pytest.raises(SystemExit) as done:
      cli.main([*args, os.path.join(folder, 'site'), *_ort_args()])
    assert done.value.code == 0
    return {}

  return os.path.join(once_per_session(tmp_path_factory, 'site', build)[0], 'site')


@contextlib.contextmanager
def serving(folder: str):
  """`folder` served on 127.0.0.1 by `tinycats serve`'s server, in a thread: its URL."""
  httpd = serve.make_server(folder, '127.0.0.1', 0, quiet=True)
  thread = threading.Thread(target=httpd.serve_forever, daemon=True)
  thread.start()
  try:
    yield f'http://127.0.0.1:{httpd.server_address[1]}/'
  finally:
    httpd.shutdown()
    httpd.server_close()


@pytest.fixture(scope='module')
def server(site_dir):
  """The site served as `tinycats serve` serves it: its URL."""
  with serving(site_dir) as url:
    yield url


@pytest.fixture(scope='module')
def browser():
  required = os.environ.get('TINYCATS_REQUIRE_BROWSER') == '1'
  problem = None
  try:
    from playwright.sync_api import sync_playwright
  except ImportError:
    problem = "Playwright for Python is not installed (pip install -e '.[dev]')"
  if problem is None and not os.access(CHROMIUM, os.X_OK):
    problem = f'no Chromium at {CHROMIUM} (apt-get install chromium, or set TINYCATS_CHROMIUM)'
  if problem:
    if required:
      pytest.fail(f'TINYCATS_REQUIRE_BROWSER=1 but {problem}')
    pytest.skip(problem)
  with sync_playwright() as playwright:
    args = ['--no-sandbox'] if os.geteuid() == 0 else []  # Chromium's sandbox refuses to run as root.
    chromium = playwright.chromium.launch(executable_path=CHROMIUM, args=args)
    yield chromium
    chromium.close()


@contextlib.contextmanager
def open_page(browser, url: str):
  """A fresh tab with the page at `url` loaded and its models ready; console errors are kept in `tab.errors`."""
  tab = browser.new_page(viewport={'width': 1000, 'height': 1200})
  errors = []
  tab.on('console', lambda message: errors.append(message.text) if message.type == 'error' else None)
  tab.on('pageerror', lambda error: errors.append(str(error)))
  try:
    tab.goto(url)
    _wait(tab, "document.body.dataset.state === 'ready'", errors)
    tab.errors = errors
    yield tab
  finally:
    tab.close()


@pytest.fixture
def page(browser, server):
  with open_page(browser, server) as tab:
    yield tab


def _wait(tab, condition: str, errors) -> None:
  tab.wait_for_function(f"({condition}) || document.body.dataset.state === 'error'", timeout=TIMEOUT_MS)
  state = tab.evaluate('document.body.dataset.state')
  assert state != 'error', f'{tab.inner_text("#status")}; console: {errors}'


def _screenshot(tab, name: str, tmp_path) -> None:
  folder = os.environ.get('TINYCATS_SCREENSHOTS') or str(tmp_path)
  os.makedirs(folder, exist_ok=True)
  tab.screenshot(path=os.path.join(folder, name), full_page=True)


def _photos(folder: str, out) -> list[str]:
  """Two PNG photos from the classifier's pictures (one of each class), one shrunk and one enlarged to odd,
  non-square sizes, so both of Pillow's resampling directions and the crop are exercised."""
  paths = []
  for name, size in (('cat', (150, 97)), ('other', (45, 61))):
    source = os.path.join(
      folder, name, sorted(f for f in os.listdir(os.path.join(folder, name)) if f != 'corrupt.jpg')[0]
    )
    path = str(out / f'{name}.png')
    Image.open(source).convert('RGB').resize(size, Image.BICUBIC).save(path)
    paths.append(path)
  return paths


def _python_probabilities(site_dir: str, path: str) -> np.ndarray:
  """Python's way: cache.fit, augment.eval_transform, ONNX Runtime on the site's cats.onnx, softmax."""
  spec = json.load(open(os.path.join(site_dir, 'models.json')))['classifier']
  policy = spec['preprocess']
  canvas, fitted = cache.fit(cache.read_image_file(path), policy['fit_size'])
  x = augment.eval_transform(
    canvas[None], np.asarray([fitted]), image_size=policy['size'], crop_fraction=policy['crop_fraction']
  )
  session = ort.InferenceSession(os.path.join(site_dir, 'cats.onnx'))
  logits = session.run(None, {spec['input']['name']: np.asarray(x).transpose(0, 3, 1, 2)})[0][0].astype(np.float64)
  probabilities = np.exp(logits - logits.max())
  return probabilities / probabilities.sum()


@pytest.mark.browser
def test_the_page_classifies_photos_as_python_does(page, site_dir, learning_folder, tmp_path):
  check_classifies(page, site_dir, learning_folder, tmp_path)


@pytest.mark.browser
def test_the_page_generates_what_python_generates_from_the_same_seed(page, generator_run, tmp_path):
  check_generates(page, generator_run, tmp_path)


def check_classifies(page, site_dir: str, learning_folder: str, tmp_path, screenshots: bool = True) -> None:
  """The page in the tab `page`, of the site in `site_dir`, classifies two photos as Python does (within 1e-4), on wasm,
  cross-origin isolated."""
  backend = page.evaluate('window.tinycats.backend')
  assert backend['name'] == 'wasm'  # Headless Chromium here has no WebGPU adapter: the page must say wasm.
  assert 'wasm' in page.inner_text('#backend-info')
  assert page.evaluate('self.crossOriginIsolated')  # The server's COOP/COEP headers: wasm threads.
  for count, path in enumerate(_photos(learning_folder, tmp_path), start=1):
    page.set_input_files('#photo', path)
    _wait(page, f'window.tinycats.classify.count === {count}', page.errors)
    result = page.evaluate('window.tinycats.classify')
    assert result['file'] == os.path.basename(path)
    assert result['classes'] == ['cat', 'other']
    expected = _python_probabilities(site_dir, path)
    np.testing.assert_allclose(result['probs'], expected, atol=1e-4, rtol=0)
    top = page.locator('#top li').first.inner_text()
    assert ['cat', 'other'][int(np.argmax(expected))] in top and 'ms' in page.inner_text('#classify-time')
    if count == 1 and screenshots:
      _screenshot(page, 'site_classify.png', tmp_path)


# (label, steps, guidance, sampler, seed, guidance interval): guidance at every step, then only mid-flow (Euler),
# then from t = 0.5 on with Heun (whose last step is Euler's, in Python and on the page).
GENERATE_CASES = (
  (0, 6, 2.0, 'euler', 7, (0.0, 1.0)),
  (1, 8, 5.0, 'euler', 11, (0.3, 0.7)),
  (3, 15, 4.0, 'heun', 4_000_000_001, (0.5, 1.0)),
)


def check_generates(page, generator_run, tmp_path, screenshots: bool = True, cases=GENERATE_CASES) -> None:
  """The page draws the generator's images for each of `cases` (settings and seeds), as `Generator.sample` and
  `tinycats sample --noise browser` do (within one grey level), starting from the run's sample.*."""
  assert page.evaluate('Array.from(window.tinycats.noise(7, 9))') == flow.browser_noise(7, 1, 1, 9).ravel().tolist()
  generator = Generator.load(generator_run[0])
  options = page.eval_on_selector_all('#label option', 'options => options.map(o => o.textContent)')
  assert options == generator.classes + ['unconditional (null label)']
  # The page's defaults are the run's sample.* (models.json carries them), what `tinycats sample` uses.
  s = generator.config.sample
  shown = [page.input_value(f'#{name}') for name in ('steps', 'guidance', 'sampler', 'guidance-from', 'guidance-to')]
  assert [float(v) if v[0].isdigit() else v for v in shown] == [s.steps, s.guidance, s.sampler, *s.guidance_interval]
  for count, (label, steps, guidance, sampler, seed, interval) in enumerate(cases, start=1):
    page.select_option('#label', str(label))
    page.fill('#steps', str(steps))
    page.fill('#guidance', str(guidance))
    page.select_option('#sampler', sampler)
    page.fill('#guidance-from', str(interval[0]))
    page.fill('#guidance-to', str(interval[1]))
    page.fill('#seed', str(seed))
    page.click('#generate-button')
    _wait(page, f'window.tinycats.generate.count === {count}', page.errors)
    result = page.evaluate('window.tinycats.generate')
    size = generator.image_size
    drawn = np.asarray(result['pixels'], np.uint8).reshape(size, size, 4)
    assert (drawn[..., 3] == 255).all()
    noise = flow.browser_noise(seed, 1, size)
    settings = dict(steps=steps, guidance=guidance, sampler=sampler, noise=noise)
    expected = generator.sample([label], guidance_interval=interval, **settings)[0]
    difference = np.abs(drawn[..., :3].astype(int) - expected)
    assert difference.max() <= 1, f'{sampler}, seed {seed}, {interval}: {difference.max()} grey levels apart'
    if interval != (0.0, 1.0):  # The interval shows: guided at every step, or at none, the picture is another.
      for other in (
        generator.sample([label], **settings)[0],
        generator.sample([label], **{**settings, 'guidance': 1})[0],
      ):
        assert np.abs(drawn[..., :3].astype(int) - other).max() > 2
    assert page.evaluate("document.getElementById('progress').value") == steps
    assert page.evaluate('window.tinycats.generate.guidanceInterval') == list(interval)
    if count == len(cases):
      if screenshots:
        _screenshot(page, 'site_generate.png', tmp_path)
      args = [
        '--label',
        str(label),
        '--num',
        '1',
        '--steps',
        str(steps),
        '--guidance',
        str(guidance),
        '--sampler',
        sampler,
      ]
      args += ['--guidance-interval', ','.join(map(str, interval))]
      with pytest.raises(SystemExit) as done:  # `tinycats sample --noise browser` draws the same image.
        cli.main(
          ['sample', '--workdir', generator_run[0], *args, '--seed', str(seed), '--noise', 'browser']
          + ['--out-dir', str(tmp_path / 'cli')]
        )
      assert done.value.code == 0
      (written,) = os.listdir(tmp_path / 'cli')
      from_cli = np.asarray(Image.open(tmp_path / 'cli' / written))
      assert np.abs(drawn[..., :3].astype(int) - from_cli).max() <= 1


@pytest.fixture(scope='session')
def recipe_generator(shape_folder, tmp_path_factory):
  """(workdir, summary): configs/dit.py's own generator (its block, x-prediction, time sampling and guidance
  interval) cut to test size and trained briefly on the shapes: the page's int8 case."""
  from tinycats.train import loop

  folder = f'--config.data.folder={shape_folder}'
  steps = ['--config.train.steps=150', '--config.train.eval_every=150', '--config.model.overlap=1']  # Patch 4.
  config = tiny_config('--config.data.source=folder', folder, *steps, spec='configs/dit.py', base=DIT_TINY)
  return once_per_session(tmp_path_factory, 'dit-recipe', lambda workdir: loop.train_and_evaluate(config, workdir))


class OnnxNetwork:
  """An exported generator as the library's samplers call a network: (x NHWC, t, labels) -> velocity NHWC, run
  by Python ONNX Runtime (through `jax.pure_callback`), so `flow.integrate` and `flow.guided_velocity` sample
  with the ONNX file exactly as they sample with the JAX model."""

  def __init__(self, session, null_label: int):
    self.session, self.null_label = session, null_label

  def _run(self, x, t, labels):
    feeds = {'noise': np.asarray(x).transpose(0, 3, 1, 2), 'timestep': np.asarray(t, np.float32)}
    velocity = self.session.run(None, {**feeds, 'breed': np.asarray(labels, np.int64)})[0]
    return velocity.transpose(0, 2, 3, 1).astype(np.float32)

  def __call__(self, x, t, labels):
    return jax.pure_callback(self._run, jax.ShapeDtypeStruct(x.shape, jnp.float32), x, t, labels)


def onnx_sample(path: str, null_label: int, noise, label: int, steps, guidance, sampler, interval) -> np.ndarray:
  """uint8 (H, W, 3): the image the library's sampler draws from `noise` (1, H, W, 3) with the ONNX model at
  `path` (int8 models with the kernel that computes what onnxruntime-web does)."""
  network = OnnxNetwork(onnx_export.session(path, precise_int8=True), null_label)
  labels = jnp.asarray([label], jnp.int32)
  velocity = lambda x, t: flow.guided_velocity(network, x, t, labels, guidance, interval)
  x = flow.integrate(velocity, jnp.asarray(noise, jnp.float32), steps, sampler)
  return augment.to_uint8(np.asarray(x), 'symmetric')[0]


def _page_velocity(tab, x: np.ndarray, t: np.ndarray, breed: np.ndarray) -> np.ndarray:
  """The velocity the page's loaded generator session computes for NCHW `x` (the page's own onnxruntime-web)."""
  out = tab.evaluate(
    """async ([x, shape, t, breed]) => {
      const ort = await import('./ort/ort.min.mjs');  // The page's module: the same Tensor class.
      const session = window.tinycats.sessions.generator;
      const result = await session.run({
        noise: new ort.Tensor('float32', Float32Array.from(x), shape),
        timestep: new ort.Tensor('float32', Float32Array.from(t), [t.length]),
        breed: new ort.Tensor('int64', BigInt64Array.from(breed.map(BigInt)), [breed.length]),
      });
      return Array.from(result[session.outputNames[0]].data);
    }""",
    [x.ravel().tolist(), list(x.shape), t.tolist(), breed.tolist()],
  )
  return np.asarray(out, np.float32).reshape(x.shape)


def test_the_page_draws_the_recipe_generator_in_float32_and_int8(browser, folder_run, recipe_generator, tmp_path):
  """configs/dit.py's generator (RMSNorm, QK-norm, SwiGLU, RoPE, overlapping tiles, x-prediction), exported with
  --int8 into a site of its own. float32: the page draws `Generator.sample`'s images. int8, chosen in the page's
  file menu: its session computes the int8 file's velocity as Python ONNX Runtime does (to float rounding), and
  its images are what the library's sampler draws with that file in Python, up to dynamic quantisation's rounding
  flips."""
  export = str(tmp_path / 'export')
  onnx_export.export_onnx(recipe_generator[0], export, int8=True)
  with pytest.raises(SystemExit) as done:
    args = ['export', 'site', '--classifier', folder_run[0], '--generator', export, '--out-dir']
    cli.main([*args, str(tmp_path / 'site'), *_ort_args()])
  assert done.value.code == 0
  generator = Generator.load(recipe_generator[0])
  assert generator.config.model.rope and generator.config.flow.prediction == 'x'
  size = generator.image_size
  files = {name: os.path.join(export, f'generator{name}.onnx') for name in ('', '_quantized')}
  label, steps, guidance, sampler, seed, interval = GENERATE_CASES[2]
  rng = np.random.default_rng(0)  # A guided step's batch: the label and the null label (-1 on the page).
  x, t, breed = rng.normal(size=(2, 3, size, size)).astype(np.float32), np.full(2, 0.3, np.float32), np.array([1, -1])
  feeds = {'noise': x, 'timestep': t, 'breed': breed}
  python = {k: onnx_export.session(f, precise_int8=True).run(None, feeds)[0] for k, f in files.items()}
  with serving(str(tmp_path / 'site')) as url, open_page(browser, url) as tab:
    check_generates(tab, recipe_generator, tmp_path, screenshots=False, cases=GENERATE_CASES[1:2])
    options = tab.eval_on_selector_all('#generator-file option', 'options => options.map(o => o.textContent)')
    assert [o.split()[0] for o in options] == ['float32', 'int8']
    tab.evaluate("document.body.dataset.state = 'switching'")  # The page says 'ready' once the new file runs.
    tab.select_option('#generator-file', index=1)
    _wait(tab, "document.body.dataset.state === 'ready'", tab.errors)
    velocity = _page_velocity(tab, x, t, breed)
    assert np.abs(velocity - python['_quantized']).max() < 1e-4  # The int8 file, computed as Python computes it,
    assert np.abs(velocity - python['']).max() > 1e-3  # and not the float32 one.
    for name, value in (('steps', steps), ('guidance', guidance), ('guidance-from', interval[0])):
      tab.fill(f'#{name}', str(value))
    tab.fill('#guidance-to', str(interval[1]))
    tab.fill('#seed', str(seed))
    tab.select_option('#sampler', sampler)
    tab.select_option('#label', str(label))
    tab.click('#generate-button')
    _wait(tab, 'window.tinycats.generate.count === 2', tab.errors)
    assert tab.evaluate('window.tinycats.generate.guidanceInterval') == list(interval)
    drawn = np.asarray(tab.evaluate('window.tinycats.generate.pixels'), np.uint8).reshape(size, size, 4)[..., :3]
  noise = flow.browser_noise(seed, 1, size)
  expected = onnx_sample(files['_quantized'], generator.null_label, noise, label, steps, guidance, sampler, interval)
  # Dynamic quantisation rounds each activation tensor to 8 bits on a scale taken from its range. The page's and
  # Python's states differ by float32 rounding (the float32 images above agree within one level), which moves
  # a few roundings by one step; over 15 Heun steps that is a few grey levels at some pixels, under one on average.
  off = np.abs(drawn.astype(int) - expected)
  assert off.max() <= 4 and off.mean() < 1.0, f'{off.max()} grey levels apart, {off.mean():.2f} on average'


def test_browser_noise_is_a_fixed_seeded_stream():
  """The values are pinned (noise.js gives these too: the browser test compares them), image 0 of a batch is the
  page's single image for that seed, seeds give different streams, and the values are standard normal."""
  np.testing.assert_array_equal(
    flow.browser_noise(0, 1, 1, 3).ravel(), np.asarray([-0.11656766, 0.9620633, -0.16051912], np.float32)
  )
  batch = flow.browser_noise(7, 3, 16)
  assert batch.shape == (3, 16, 16, 3) and batch.dtype == np.float32
  np.testing.assert_array_equal(batch[:1], flow.browser_noise(7, 1, 16))
  assert not np.allclose(batch[:1], flow.browser_noise(8, 1, 16))
  many = flow.browser_noise(123, 64, 32).ravel()
  assert abs(many.mean()) < 0.01 and abs(many.std() - 1) < 0.01
  with pytest.raises(ValueError, match='32-bit'):
    flow.browser_noise(2**32, 1, 16)


def test_the_server_sends_module_and_wasm_types_and_isolation_headers(site_dir, server):
  for path, kind in (
    ('', 'text/html'),
    ('app.js', 'text/javascript'),
    ('ort/ort.min.mjs', 'text/javascript'),
    ('ort/ort-wasm-simd-threaded.jsep.wasm', 'application/wasm'),
    ('models.json', 'application/json'),
    ('cats.onnx', 'application/octet-stream'),
  ):
    with urllib.request.urlopen(server + path) as response:
      assert response.headers['Content-Type'].startswith(kind), path
      assert response.headers['Cross-Origin-Opener-Policy'] == 'same-origin'
      assert response.headers['Cross-Origin-Embedder-Policy'] == 'require-corp'


def test_the_site_holds_the_pinned_runtime_and_both_models(site_dir):
  spec = json.load(open(os.path.join(site_dir, 'models.json')))
  assert spec['site']['onnxruntime-web'] == site.ORT_VERSION
  assert spec['runtime']['onnxruntime-web'] == '>=1.24.2' and spec['runtime']['opset'] == 23
  assert set(spec['models']) == {'classifier', 'generator'}
  for name in spec['site']['files'] + ['cats.onnx', 'generator.onnx', 'index.html', 'app.js']:
    assert os.path.getsize(os.path.join(site_dir, name)) > 0, name
  assert sorted(os.listdir(os.path.join(site_dir, 'ort'))) == sorted(site.ORT_FILES)
  assert not [n for n in os.listdir(os.path.dirname(site_dir)) if n.startswith('.')]  # No staging left.


def test_offline_and_bad_destinations_are_user_errors(site_dir, folder_run, tmp_path, monkeypatch):
  """No network: the error names the URL and --ort-dir; a wrong --ort-dir or a folder of other files is
  refused, and nothing is left behind."""
  monkeypatch.setenv('TINYCATS_CACHE', str(tmp_path / 'empty-cache'))
  monkeypatch.setattr(site, 'ORT_URL', 'http://127.0.0.1:9/onnxruntime-web-0.0.0.tgz')
  out = tmp_path / 'new-site'
  with pytest.raises(UserError, match='127.0.0.1:9.*--ort-dir'):
    site.export_site(site_dir, str(out))
  with pytest.raises(UserError, match='--ort-dir'):
    site.export_site(site_dir, str(out), ort_dir=str(tmp_path))
  older = tmp_path / 'older' / 'dist'  # An unpacked onnxruntime-web of another version.
  older.mkdir(parents=True)
  for name in site.ORT_FILES:
    (older / name).write_text('/*!\n * ONNX Runtime Web v1.20.1\n */\n')
  with pytest.raises(UserError, match=f'not onnxruntime-web {site.ORT_VERSION}'):
    site.export_site(site_dir, str(out), ort_dir=str(tmp_path / 'older'))
  assert not out.exists() and [p.name for p in tmp_path.iterdir() if p.name.startswith('.')] == []
  (tmp_path / 'mine').mkdir()
  (tmp_path / 'mine' / 'notes.txt').write_text('keep me')
  with pytest.raises(UserError, match='not a tinycats site'):
    site.export_site(site_dir, str(tmp_path / 'mine'))
  assert os.listdir(tmp_path / 'mine') == ['notes.txt']


def test_a_site_is_rebuilt_in_place_from_an_earlier_site(site_dir, tmp_path):
  """An earlier site is a valid source (its models.json names both models) and is replaced whole."""
  copy = str(tmp_path / 'copy')
  shutil.copytree(site_dir, copy)
  ort_dir = os.path.join(site_dir, 'ort')  # An unpacked dist/ of the pinned version.
  report = site.export_site(copy, copy, generator=copy, ort_dir=ort_dir)
  assert report['models'] == {
    'classifier': {'source': copy, 'exported': False},
    'generator': {'source': copy, 'exported': False},
  }
  assert sorted(os.listdir(copy)) == sorted(os.listdir(site_dir))


def test_serve_answers_only_regular_files_inside_the_site(tmp_path):
  root = tmp_path / 'site'
  (root / 'sub').mkdir(parents=True)
  (root / 'index.html').write_text('<p>page</p>')
  (root / 'sub' / 'a.txt').write_text('inside')
  secret = tmp_path / 'secret.txt'
  secret.write_text('outside')
  os.symlink(secret, root / 'link.txt')
  os.symlink(tmp_path, root / 'up')
  httpd = serve.make_server(str(root), '127.0.0.1', 0, quiet=True)
  threading.Thread(target=httpd.serve_forever, daemon=True).start()
  url = f'http://127.0.0.1:{httpd.server_address[1]}/'
  try:
    assert urllib.request.urlopen(url).read() == b'<p>page</p>'
    assert urllib.request.urlopen(url + 'sub/a.txt').read() == b'inside'
    for path in ('link.txt', 'up/secret.txt', 'sub/', 'up/', 'missing.txt'):
      with pytest.raises(urllib.error.HTTPError) as e:
        urllib.request.urlopen(url + path)
      assert e.value.code == 404, path
  finally:
    httpd.shutdown()
    httpd.server_close()
