"""One workdir, one writer: a training run holds an exclusive `flock` on `WORKDIR/.lock` from start to end.

The kernel drops an flock when its process ends however it ends (kill -9 too), so a lock left by a dead run
is free and the next run takes it over. The file's text (host, pid, start time) only names the holder in the
message that refuses a second run; a run that ends, by an error too, empties it, so text found under a free
lock means its run was killed. flock is local to one machine's kernel: on a filesystem without it (some
network mounts) the run goes on unlocked after one warning.
"""

from __future__ import annotations

import contextlib
import datetime
import errno
import fcntl
import json
import os
import socket
import sys

from tinycats import files, writers
from tinycats.errors import UserError

LOCK = '.lock'
_UNSUPPORTED = (errno.ENOLCK, errno.EOPNOTSUPP, errno.ENOSYS, errno.EINVAL)


class WorkdirBusy(UserError):
  """Another run holds the workdir's lock."""


def _describe(text: str) -> str:
  try:
    holder = json.loads(text)
    return f'pid {holder["pid"]} on host {holder["host"]}, started {holder["started"]}'
  except (ValueError, KeyError, TypeError):
    return 'a process that has not yet written its name'


@contextlib.contextmanager
def hold(workdir: str):
  """Holds `workdir`'s lock for the `with` block; raises WorkdirBusy at once when another run holds it.

  In a multi-process run only process 0, the one that writes the run's files, locks.
  """
  if not writers.writes_files():
    yield
    return
  path = os.path.join(workdir, LOCK)
  files.refuse_links(workdir, [LOCK])
  fd = os.open(path, os.O_RDWR | os.O_CREAT | getattr(os, 'O_NOFOLLOW', 0), 0o644)
  locked = True
  try:
    try:
      fcntl.flock(fd, fcntl.LOCK_EX | fcntl.LOCK_NB)
    except BlockingIOError:
      with open(path) as f:
        holder = _describe(f.read())
      raise WorkdirBusy(
        f'{os.path.abspath(workdir)} is in use by another training run ({holder}); wait for it to end or stop '
        'it, or train in another --workdir'
      ) from None
    except OSError as e:
      if e.errno not in _UNSUPPORTED:
        raise
      locked = False
      print(
        f'warning: {path}: this filesystem does not support flock ({e.strerror}); the workdir is not locked, '
        'so make sure no other run uses it',
        file=sys.stderr,
      )
    previous = os.pread(fd, 4096, 0).decode(errors='replace')
    if locked and previous.strip():
      print(f'taking over the lock of a run that ended without releasing it ({_describe(previous)})', file=sys.stderr)
    started = datetime.datetime.now(datetime.UTC).strftime('%Y-%m-%d %H:%M:%S UTC')
    os.ftruncate(fd, 0)
    os.pwrite(fd, json.dumps(dict(host=socket.gethostname(), pid=os.getpid(), started=started)).encode(), 0)
    try:
      yield
    finally:
      os.ftruncate(fd, 0)  # The run ended here, not killed: an empty file under a free lock.
  finally:
    os.close(fd)  # Releases the lock.
