"""The launch plan: everything a Modal run needs, resolved from the config alone (no Modal, no network).

`--dry-run` prints it; `modal_app.build` turns it into a `modal.App`. Keeping it plain data means
what will run can be read, tested and diffed before anything is built or paid for.
"""

from __future__ import annotations

import importlib.metadata
import os
import re
import sys
import tomllib

from tinycats.config import ConfigError
from tinycats.train import compile_cache

REPO = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
# GPU types Modal accepts for `gpu=` (https://modal.com/docs/guide/gpu), as TYPE or TYPE:COUNT.
GPU_TYPES = ('T4', 'L4', 'A10G', 'L40S', 'A100', 'A100-40GB', 'A100-80GB', 'H100', 'H100!', 'H200', 'B200')
MAX_GPUS = 8  # Per container.
DATA_MOUNT, OUTPUTS_MOUNT = '/data', '/outputs'
TFDS_SUBDIR = 'tfds'  # The prepared TFDS data dir inside the data volume.
XLA_CACHE = f'{OUTPUTS_MOUNT}/.xla-cache'  # train.compilation_cache='auto' on Modal: shared by every run of the app.
MAX_TIMEOUT = 24 * 3600  # Modal's limit for one function call.
PYTHON = f'{sys.version_info.major}.{sys.version_info.minor}'


def requirements(extra: str | None = None) -> list[str]:
  """The package's own dependency list (pyproject.toml), plus one optional extra."""
  with open(os.path.join(REPO, 'pyproject.toml'), 'rb') as f:
    project = tomllib.load(f)['project']
  return list(project['dependencies']) + (list(project['optional-dependencies'][extra]) if extra else [])


def parse_gpu(spec: str) -> tuple[str, int]:
  """'H100' -> ('H100', 1); 'H100:8' -> ('H100', 8); anything else is a ConfigError naming the field."""
  match = re.fullmatch(r'([A-Za-z0-9!-]+)(?::(\d+))?', spec or '')
  kind, count = (match.group(1).upper(), int(match.group(2) or 1)) if match else (None, 0)
  if kind not in GPU_TYPES or not 1 <= count <= MAX_GPUS:
    raise ConfigError(
      f'config field modal.gpu is {spec!r}; use TYPE or TYPE:COUNT with TYPE one of '
      f'{", ".join(GPU_TYPES)} and COUNT 1-{MAX_GPUS}, e.g. --config.modal.gpu=H100:8'
    )
  return kind, count


def gpu_packages() -> list[str]:
  """The GPU image's packages: the dependencies with JAX pinned to this machine's version, so that the
  image runs what was tested here and every run of the app can load the others' compiled steps (JAX's
  compilation cache is keyed by its version)."""
  jax_version = importlib.metadata.version('jax')
  packages = [p for p in requirements('gpu') if not re.match(r'(jax|jaxlib)(\[|[<>=!~ ]|$)', p)]
  return [*packages, f'jax[cuda12]=={jax_version}']


def check(config) -> None:
  """The modal.* fields, each error naming its field."""
  m = config.modal
  parse_gpu(m.gpu)
  if not 0 < m.timeout <= MAX_TIMEOUT:
    raise ConfigError(
      f'config field modal.timeout is {m.timeout}; it is in seconds, > 0 and at most {MAX_TIMEOUT} '
      '(a longer run resumes across calls: run the same command again)'
    )
  if m.retries < 0 or m.nodes < 1 or m.memory_gb < 0:
    raise ConfigError(
      'config fields modal.retries and modal.memory_gb must be >= 0 and modal.nodes >= 1 '
      f'(got {m.retries}, {m.memory_gb}, {m.nodes})'
    )
  for field in ('app', 'data_volume', 'outputs_volume'):
    if not re.fullmatch(r'[A-Za-z0-9._-]{1,64}', m[field]):
      raise ConfigError(f'config field modal.{field} is {m[field]!r}; use letters, digits, ".", "_" or "-"')


def launch_plan(config, run_name: str) -> dict:
  """The resolved plan for running `config` as `run_name` on Modal."""
  check(config)
  m = config.modal
  gpu_type, gpu_count = parse_gpu(m.gpu)
  workdir = f'{OUTPUTS_MOUNT}/{run_name}'
  data_dir = f'{DATA_MOUNT}/{TFDS_SUBDIR}'
  resolved = config.to_dict()
  if config.data.source == 'tfds':
    resolved['data']['data_dir'] = data_dir
  if resolved['train'].get('compilation_cache') == 'auto':
    resolved['train']['compilation_cache'] = XLA_CACHE
  return {
    'app': m.app,
    'run_name': run_name,
    'workdir': workdir,
    'gpu': f'{gpu_type}:{gpu_count}' if gpu_count > 1 else gpu_type,
    'gpu_count': gpu_count,
    'nodes': m.nodes,
    'devices': gpu_count * m.nodes,
    'timeout': m.timeout,
    'retries': {'max_retries': m.retries, 'backoff_coefficient': 2.0, 'initial_delay': 10.0, 'max_delay': 60.0},
    'memory_mb': int(m.memory_gb * 1024) or None,
    # The functions are pickled here and unpickled there: the container runs this Python's version.
    'image': {
      'python': PYTHON,
      'packages': gpu_packages(),
      'local_sources': ['tinycats', 'launch'],
      'local_dirs': {'configs': '/root/configs'},
    },
    'prepare_image': {'python': PYTHON, 'packages': requirements('prepare')},
    'volumes': {
      'data': {'name': m.data_volume, 'mount': DATA_MOUNT, 'tfds_data_dir': data_dir},
      'outputs': {'name': m.outputs_volume, 'mount': OUTPUTS_MOUNT},
    },
    'compilation_cache': compile_cache.folder(resolved['train'].get('compilation_cache', '')),
    # One call per run name (launch/claim.py): claims in this Dict; a holder silent longer than a call may run is dead.
    'claims': {'dict': f'{m.app}-runs', 'stale_after_s': m.timeout + 60},
    'follow': f'modal app logs {m.app}',
    'fetch': f'modal volume get {m.outputs_volume} {run_name} runs/{run_name}',
    'config': resolved,
  }
