"""JAX's persistent compilation cache, on by default for training.

A resumed, retried or repeated run loads its compiled steps from disk instead of compiling them again
(compilation is seconds on a CPU and up to minutes for the real models on a GPU). `train.compilation_cache`:
'auto' (`$TINYCATS_CACHE/xla`, else `~/.cache/tinycats/xla`; on Modal a folder on the outputs volume that every
run of the app shares), a folder, or '' for none. A cache JAX was already given (`JAX_COMPILATION_CACHE_DIR`,
`jax.config`) is left as it is. The cache never stops a run: a folder that cannot be written gives one warning
and the run compiles as usual; an unreadable entry is compiled again (JAX warns).
"""

from __future__ import annotations

import os
import tempfile
import warnings

import jax


def default_folder() -> str:
  return os.path.expanduser(os.path.join(os.environ.get('TINYCATS_CACHE') or '~/.cache/tinycats', 'xla'))


def folder(setting: str) -> str:
  """The folder `setting` names ('' when the cache is off)."""
  if not setting:
    return ''
  return default_folder() if setting == 'auto' else os.path.expanduser(setting)


def enable(setting: str) -> str:
  """Points JAX's persistent cache at `setting`'s folder, unless JAX already has one; returns the folder in use."""
  current = jax.config.jax_compilation_cache_dir
  if current:
    return current
  path = folder(setting)
  if not path:
    return ''
  try:
    os.makedirs(path, exist_ok=True)
    with tempfile.NamedTemporaryFile(dir=path, prefix='.probe-'):
      pass
  except OSError as e:
    warnings.warn(
      f'the compilation cache {path} cannot be written ({e.strerror or e}); compiling as usual. Set '
      "train.compilation_cache to another folder, or to '' to turn the cache off",
      stacklevel=2,
    )
    return ''
  jax.config.update('jax_compilation_cache_dir', path)
  return path
