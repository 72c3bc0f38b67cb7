"""The folders an export writes: `--out-dir` made and proved writable first, the files made in a hidden staging
folder inside it, then moved in (`publish`), so a failure or a kill never leaves half a model there; or, for an
export that owns its whole folder, built beside it and renamed into place (`staging_beside`).

Shared by `export onnx`, `export hub` and `export site`.
"""

from __future__ import annotations

import contextlib
import os
import shutil
import tempfile

from tinycats import files
from tinycats.errors import UserError
from tinycats.inference import ExportError

STAGING = '.tinycats-export-'  # Prefix of the hidden folder an export is made in, inside its --out-dir.


def writable_folder(out_dir: str) -> str:
  """Creates `out_dir` if needed and proves it writable, before any work."""
  try:
    os.makedirs(out_dir, exist_ok=True)
    probe = tempfile.NamedTemporaryFile(dir=out_dir, prefix='.tinycats-probe-', delete=True)
    probe.close()
  except OSError as e:
    raise ExportError(
      f'cannot write to {out_dir!r} ({type(e).__name__}: {e.strerror or e}); choose another --out-dir'
    ) from e
  return out_dir


def publish(staged: str, names, out_dir: str) -> None:
  """Moves finished files from the staging folder into `out_dir` (readable like any file the user writes)."""
  umask = os.umask(0)
  os.umask(umask)
  for name in names:
    os.chmod(os.path.join(staged, name), 0o666 & ~umask)
    os.replace(os.path.join(staged, name), os.path.join(out_dir, name))


@contextlib.contextmanager
def staging(out_dir: str):
  """A hidden folder inside `out_dir` for the files being made; removed whatever happens, and by the next
  export if its process was killed (`files.working_folder`)."""
  with files.working_folder(out_dir, STAGING) as folder:
    yield folder


@contextlib.contextmanager
def output_folder(out_dir: str):
  """`out_dir`, created and proved writable; a folder this export created is removed again if it fails empty."""
  created = not os.path.exists(out_dir)
  writable_folder(out_dir)
  try:
    yield out_dir
  except BaseException:
    if created and os.path.isdir(out_dir) and not os.listdir(out_dir):
      os.rmdir(out_dir)
    raise


def replaceable(out_dir: str, marker: str) -> bool:
  """Whether a whole-folder export may replace `out_dir`: it is missing, empty, or holds `marker` (an earlier
  export of the same kind wrote it)."""
  return not os.path.exists(out_dir) or (
    os.path.isdir(out_dir) and (not os.listdir(out_dir) or os.path.isfile(os.path.join(out_dir, marker)))
  )


@contextlib.contextmanager
def staging_beside(out_dir: str):
  """A hidden folder beside `out_dir`, renamed to `out_dir` if the body succeeds (the old folder replaced in one
  rename), removed whatever happens (and by the next export if this process is killed: `files.working_folder`).
  For an export that owns its whole folder (`export site`); `staging` is for files added to a user's folder."""
  out_dir = os.path.abspath(out_dir)
  parent, name = os.path.split(out_dir)
  try:
    os.makedirs(parent, exist_ok=True)
  except OSError as e:
    raise UserError(f'cannot write beside {out_dir} ({e.strerror or e}); choose another --out-dir') from e
  files.remove_abandoned(parent, f'.{name}.old-')  # A folder set aside by an export killed between its renames.
  with files.working_folder(parent, f'.{name}.tinycats-') as staged:
    yield staged
    os.chmod(staged, 0o755)  # mkdtemp's 0700 would hide a site from a web server running as another user.
    old = None
    try:
      if os.path.exists(out_dir):
        old = tempfile.mkdtemp(prefix=f'.{name}.old-', dir=parent)
        os.rename(out_dir, os.path.join(old, 'site'))
      try:
        os.rename(staged, out_dir)
      except OSError:
        if old:  # The previous folder back where it was.
          os.rename(os.path.join(old, 'site'), out_dir)
        raise
    finally:
      if old:
        shutil.rmtree(old, ignore_errors=True)
