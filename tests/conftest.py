"""Shared fixtures: fake Oxford-IIIT Pet archives and a TFDS data_dir prepared from them."""

from __future__ import annotations

import contextlib
import io
import json
import os
import shutil
import subprocess
import sys

import fake_pets
import pytest
from filelock import FileLock

from tinycats.data import shapes

REPO = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))


def pytest_configure(config):
  """One persistent XLA compilation cache per session, shared with child processes and xdist's workers (through
  the environment): the many tiny runs that compile the same step compile it once. Set here, before any
  test module is imported, because JAX decides whether to use the cache at its first compilation."""
  import tempfile

  import jax

  path = os.environ.get('JAX_COMPILATION_CACHE_DIR', '') if os.environ.get('PYTEST_XDIST_WORKER') else ''
  if not path:  # The main process makes it; pytest-xdist's workers inherit it through the environment.
    path = tempfile.mkdtemp(prefix='tinycats-xla-cache-')
    config.add_cleanup(lambda: shutil.rmtree(path, ignore_errors=True))
  os.environ['JAX_COMPILATION_CACHE_DIR'] = path
  os.environ['JAX_PERSISTENT_CACHE_MIN_COMPILE_TIME_SECS'] = '0.5'
  jax.config.update('jax_compilation_cache_dir', path)
  jax.config.update('jax_persistent_cache_min_compile_time_secs', 0.5)


def pytest_collection_modifyitems(config, items):
  """`gpu` tests need an accelerator; TINYCATS_GPU_TESTS=cpu (benchmarks/gpu.sh --cpu) runs them on the CPU."""
  import jax

  if jax.default_backend() != 'cpu' or os.environ.get('TINYCATS_GPU_TESTS') == 'cpu':
    return
  skip = pytest.mark.skip(reason='needs a GPU or TPU (benchmarks/gpu.sh --cpu runs it on the CPU)')
  for item in items:
    if 'gpu' in item.keywords:
      item.add_marker(skip)


def run_tinycats(*args: str, timeout: float = 300) -> subprocess.CompletedProcess:
  """`python -m tinycats ARGS` in a child process, so TensorFlow never loads in the test process."""
  return subprocess.run(
    [sys.executable, '-m', 'tinycats', *args], cwd=REPO, capture_output=True, text=True, timeout=timeout
  )


def run_main(main, *args: str) -> subprocess.CompletedProcess:
  """A command's `main(args)` run in this process, its exit code and output kept as `run_tinycats` keeps them.

  For commands that load neither TensorFlow nor a training run: a child process costs seconds of imports."""
  out, err = io.StringIO(), io.StringIO()
  with contextlib.redirect_stdout(out), contextlib.redirect_stderr(err):
    try:
      code = main(list(args))
    except SystemExit as e:  # argparse, and `tinycats`'s main, exit rather than return.
      code = e.code
  return subprocess.CompletedProcess(list(args), code or 0, out.getvalue(), err.getvalue())


def launch_local(image_folder: str, workdir: str, *overrides: str) -> list[str]:
  """The command line of a tiny classifier run on `image_folder` through `python -m launch.modal_train --local`,
  for tests that need a real process (kill -9, two runs at once); `[3:]` is its argv for `modal_train.main`."""
  return [
    sys.executable,
    '-m',
    'launch.modal_train',
    '--config',
    'configs/cats.py:smoke',
    '--local',
    '--workdir',
    workdir,
    *TINY,
    '--config.data.source=folder',
    f'--config.data.folder={image_folder}',
    *overrides,
  ]


@pytest.fixture(scope='session')
def pets_archives(tmp_path_factory) -> tuple[str, dict]:
  """(folder with fake images.tar.gz and annotations.tar.gz, what make_archives says they hold)."""
  out = str(tmp_path_factory.mktemp('pets_archives'))
  return out, fake_pets.make_archives(out, per_breed_train=5)


@pytest.fixture(scope='session')
def prepared_pets(tmp_path_factory, pets_archives) -> str:
  """A TFDS data_dir holding the fake archives prepared by `tinycats prepare --no-verify`."""
  data_dir = str(tmp_path_factory.mktemp('tfds'))
  result = run_tinycats('prepare', '--archives', pets_archives[0], '--data-dir', data_dir, '--no-verify')
  assert result.returncode == 0, result.stderr[-4000:]
  return data_dir


# Tiny, CPU-sized settings for the classifier recipe: the same code paths as the real run.
TINY = [
  '--config.model.pretrained=',
  '--config.model.width=8',
  '--config.data.image_size=32',
  '--config.data.cache_size=36',
  '--config.train.batch_size=16',
  '--config.train.eval_batch_size=32',
  '--config.train.steps=0',
  '--config.train.epochs=6',
  '--config.train.eval_every=0',
  '--config.train.learning_rate=3e-3',
  '--config.train.log_every=4',
  '--config.train.patience=0',
]


@pytest.fixture(autouse=True, scope='session')
def _private_cache(tmp_path_factory):
  """Decoded-image caches go to a per-session folder, never to ~/.cache."""
  os.environ['TINYCATS_CACHE'] = str(tmp_path_factory.mktemp('cache'))


def _pets_folder(root: str, per_class: int, size: int) -> str:
  """Cat and dog heads told apart by their ears alone (tests/fake_pets.py), and one corrupt file."""
  fake_pets.make_image_folder(root, per_class=per_class, size=size)
  with open(os.path.join(root, 'cat', 'corrupt.jpg'), 'wb') as f:
    f.write(b'\xff\xd8\xff this is not a JPEG')
  return root


@pytest.fixture(scope='session')
def image_folder(tmp_path_factory) -> str:
  """A small two-class folder for the tests of the machinery (resume, sharding, Modal, export)."""
  return _pets_folder(str(tmp_path_factory.mktemp('images')), per_class=100, size=40)


@pytest.fixture(scope='session')
def learning_folder(tmp_path_factory) -> str:
  """The same kind of pictures, enough of them and large enough (72 px) for a tiny network to learn the ears."""
  return _pets_folder(str(tmp_path_factory.mktemp('pets')), per_class=200, size=72)


# What the tiny network needs to learn shape rather than colour: 64 px (the ImageNet stem leaves 16x16 maps)
# and 200 steps (the smoke recipe's recolouring and crops included).
LEARNING = [
  '--config.data.image_size=64',
  '--config.data.cache_size=72',
  '--config.train.steps=200',
  '--config.train.eval_every=50',
]


def tiny_config(*overrides: str, spec: str = 'configs/cats.py:smoke', base: list[str] | None = None):
  """`spec` with the tiny settings (`base`, TINY by default) and then `overrides` applied."""
  from tinycats import config as config_lib

  return config_lib.load(os.path.join(REPO, spec), (TINY if base is None else base) + list(overrides))


def once_per_session(tmp_path_factory, name: str, train) -> tuple[str, dict]:
  """(workdir, summary) of `train(workdir)`, run once per test session even with pytest-xdist's workers.

  The first worker to ask trains under a file lock in the session's shared temporary folder; the others wait
  and reuse its workdir (xdist's documented pattern for session fixtures). Without xdist it just trains."""
  if not os.environ.get('PYTEST_XDIST_WORKER'):
    workdir = str(tmp_path_factory.mktemp(name))
    return workdir, train(workdir)
  root = tmp_path_factory.getbasetemp().parent  # pytest-N/, shared by this session's workers.
  workdir, done = root / name, root / f'{name}.json'
  with FileLock(str(root / f'{name}.lock')):
    if not done.is_file():
      done.write_text(json.dumps(train(str(workdir))))
  return str(workdir), json.loads(done.read_text())


@pytest.fixture(scope='session')
def folder_run(learning_folder, tmp_path_factory):
  """(workdir, summary): the tiny cat/other classifier trained on `learning_folder` (shared by several modules)."""
  from tinycats.train import loop

  config = tiny_config('--config.data.source=folder', f'--config.data.folder={learning_folder}', *LEARNING)
  return once_per_session(tmp_path_factory, 'run', lambda workdir: loop.train_and_evaluate(config, workdir))


# The generator's tiny set and runs (shared by test_generate and test_export).
CLASSES = (
  'circle',
  'cross',
  'square',
  'triangle',
)  # One random colour on another (shapes.FLAT): only the shape differs.
# The smoke recipe cut to test size: the same code paths as the real run.
DIT_TINY = [
  '--config.model.width=64',
  '--config.model.depth=2',
  '--config.model.heads=2',
  '--config.model.patch_size=4',
  '--config.data.image_size=16',
  '--config.data.cache_size=20',
  '--config.data.val_fraction=0.1',
  '--config.data.test_fraction=0.1',
  '--config.train.batch_size=32',
  '--config.train.eval_batch_size=64',
  '--config.train.steps=400',
  '--config.train.learning_rate=4e-3',
  '--config.train.warmup_epochs=2',
  '--config.train.log_every=10',
  '--config.train.eval_every=100',
  '--config.ema.decay=0.99',
  '--config.sample.steps=10',
  '--config.sample.per_class=3',
  '--config.sample.guidance=2.0',
]


def dit_config(folder, *overrides):
  return tiny_config(
    '--config.data.source=folder',
    f'--config.data.folder={folder}',
    *overrides,
    spec='configs/dit.py:smoke',
    base=DIT_TINY,
  )


@pytest.fixture(scope='session')
def shape_folder(tmp_path_factory):
  root = str(tmp_path_factory.mktemp('shapes'))
  fake_pets.make_image_folder(root, classes=CLASSES, per_class=100, size=20, style=shapes.FLAT)
  return root


@pytest.fixture(scope='session')
def generator_run(shape_folder, tmp_path_factory):
  """(workdir, summary): the tiny DiT trained on `shape_folder`."""
  from tinycats.train import loop

  config = dit_config(shape_folder)
  return once_per_session(tmp_path_factory, 'dit', lambda workdir: loop.train_and_evaluate(config, workdir))


@pytest.fixture(scope='session')
def judge(shape_folder, tmp_path_factory):
  """A tiny classifier trained on the same images as the generator sees them (16 px): the judge of the samples."""
  from benchmarks import quality
  from tinycats.train import loop

  workdir = str(tmp_path_factory.mktemp('judge'))
  view = quality.generator_view(shape_folder, str(tmp_path_factory.mktemp('view')), dit_config(shape_folder).data)
  # The generator's partition (its fractions and floor), so the judge never trains on the generator's test images.
  loop.train_and_evaluate(
    tiny_config(
      '--config.data.source=folder',
      f'--config.data.folder={view}',
      *LEARNING,
      '--config.data.val_fraction=0.1',
      '--config.data.test_fraction=0.1',
      '--config.data.val_min_per_class=4',
      '--config.train.steps=600',  # A judge that tells the shapes apart (200 steps: about 0.4 of 4 classes).
    ),
    workdir,
  )
  return workdir
