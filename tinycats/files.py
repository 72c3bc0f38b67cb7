"""Writing files in a workdir without ever writing outside it.

A workdir may be shared, copied from a volume or downloaded, so any name in it may be a symlink planted to a
file elsewhere. Every file tinycats writes there goes through `atomic_write` (a fresh temporary file beside it,
then a rename, which replaces a link itself and never follows it) or `append_line` (which refuses a link), and
the folders it writes into are checked by `refuse_links` before a run starts.
"""

from __future__ import annotations

import contextlib
import fcntl
import os
import shutil
import tempfile

from tinycats.errors import UserError

# The folders a run writes into (Orbax's checkpoints, damaged steps set aside, sample grids, TensorBoard's
# events): a link there would take every file written inside it out of the workdir.
WORKDIR_FOLDERS = ('checkpoints', 'damaged_checkpoints', 'samples', 'tensorboard')


class LinkedPath(UserError):
  """A name tinycats writes to in a workdir is a symlink: following it would write outside the workdir."""


@contextlib.contextmanager
def atomic_write(path: str, mode: str = 'w'):
  """Yields a file open for writing whose contents become `path` only when the block succeeds.

  The temporary file is made by `mkstemp` (a new name, O_EXCL: a planted link is never followed); the rename
  replaces whatever `path` was, a symlink included, so a reader sees the old file or the whole new one.
  """
  folder, name = os.path.split(os.path.abspath(path))
  fd, tmp = tempfile.mkstemp(dir=folder, prefix=f'.{name}.', suffix='.tmp')
  try:
    with os.fdopen(fd, mode) as f:
      yield f
    os.replace(tmp, path)
  except BaseException:
    with contextlib.suppress(FileNotFoundError):
      os.remove(tmp)
    raise


def append_line(path: str, line: str) -> None:
  """Appends `line` to `path` (created if missing), refusing to follow a symlink there."""
  try:
    fd = os.open(path, os.O_WRONLY | os.O_APPEND | os.O_CREAT | getattr(os, 'O_NOFOLLOW', 0), 0o644)
  except OSError as e:
    if os.path.islink(path):
      raise _linked(path) from e
    raise
  with os.fdopen(fd, 'a') as f:
    f.write(line)


def refuse_links(folder: str, names) -> None:
  """Raises `LinkedPath` when `folder`/name is a symlink, for each name that tinycats writes into."""
  for name in names:
    path = os.path.join(folder, name)
    if os.path.islink(path):
      raise _linked(path)


def check_writable(folders) -> None:
  """Raises a one-line UserError for the first existing folder a file cannot be created in (read-only, not
  ours): before a run's first step, not at its first checkpoint, where Orbax's threads report it at length."""
  for folder in folders:
    if not os.path.isdir(folder):
      continue
    try:
      with tempfile.TemporaryFile(dir=folder):
        pass
    except OSError as e:
      raise UserError(
        f'{folder} cannot be written ({e.strerror}), and a run writes its checkpoints and files there; make it '
        'writable, or train in another --workdir'
      ) from None


BUSY = '.busy'  # Suffix of the lock file beside a working folder.


@contextlib.contextmanager
def working_folder(parent: str, prefix: str):
  """Yields a new folder `parent/prefix*` for work in progress (a cache being built, an export being staged),
  removed when the block ends unless the block renamed it into place.

  A process killed with -9 runs no cleanup, so each such folder has a lock file beside it, `<folder>.busy`,
  made before the folder and removed after it, and flock-ed while its process lives: `remove_abandoned`
  deletes exactly the folders whose process is gone.
  """
  remove_abandoned(parent, prefix)
  fd, lock_path = tempfile.mkstemp(prefix=prefix, suffix=BUSY, dir=parent)
  try:
    fcntl.flock(fd, fcntl.LOCK_EX)
    folder = lock_path[: -len(BUSY)]
    os.mkdir(folder)
    try:
      yield folder
    finally:
      shutil.rmtree(folder, ignore_errors=True)  # Nothing left to remove when the block renamed it away.
  finally:
    os.remove(lock_path)
    os.close(fd)


def remove_abandoned(parent: str, prefix: str) -> None:
  """Deletes the working folders `parent/prefix*` (and their lock files) whose process has died."""
  names = set(os.listdir(parent)) if os.path.isdir(parent) else set()
  for name in sorted(n for n in names if n.startswith(prefix) and not n.endswith(BUSY)):
    folder = os.path.join(parent, name)
    try:
      fd = os.open(folder + BUSY, os.O_RDWR)
    except FileNotFoundError:  # The lock is made before the folder and removed after it: its process is gone.
      shutil.rmtree(folder, ignore_errors=True)
      continue
    try:
      fcntl.flock(fd, fcntl.LOCK_EX | fcntl.LOCK_NB)
    except BlockingIOError:
      continue  # Its process is alive.
    finally:
      os.close(fd)
    shutil.rmtree(folder, ignore_errors=True)
    with contextlib.suppress(FileNotFoundError):
      os.remove(folder + BUSY)


def _linked(path: str) -> LinkedPath:
  return LinkedPath(
    f'{path} is a symlink (to {os.readlink(path)}); tinycats writes only inside the workdir and will not follow '
    'it. Remove the link (or copy the workdir with its links resolved) and run again.'
  )
