"""The one base class for errors a user can fix (bad config, data, files or workdir), and the exit codes.

Every command (`tinycats ...`, `python -m launch.modal_train`) prints a user error as one line with the
way out and exits 2; so is a full or read-only file system, wherever it surfaces. Any other exception is a
bug, keeps its traceback and exits 1.
"""

import errno
import os
import re
import sys
from collections.abc import Callable

USER_ERROR = 2  # Exit code of a user error (argparse's too); an unexpected failure exits 1.


class UserError(ValueError):
  """A problem with the input, not with tinycats; the message says what to do."""


FULL = (errno.ENOSPC, errno.EDQUOT)
READ_ONLY = (errno.EROFS, errno.EACCES, errno.EPERM)
# TensorStore (Orbax's array writer) reports an OS error as a ValueError with the code in its message.
_TENSORSTORE_CODE, _TENSORSTORE_FILE = re.compile(r"os_error_code='(\d+)'"), re.compile(r'local file "([^"]+)"')


def file_system_error(error: BaseException | None) -> OSError | None:
  """The OSError of a full or read-only file system behind `error`, if any: libraries (Orbax's async
  checkpointing among them) re-raise it wrapped, so the chain of causes is searched."""
  seen = set()
  while error is not None and id(error) not in seen:
    seen.add(id(error))
    if isinstance(error, OSError) and error.errno in FULL + READ_ONLY:
      return error
    if (code := _TENSORSTORE_CODE.search(str(error))) and int(code[1]) in FULL + READ_ONLY:
      file = _TENSORSTORE_FILE.search(str(error))
      return OSError(int(code[1]), os.strerror(int(code[1])), file[1] if file else None)
    error = error.__cause__ or error.__context__
  return None


def describe_file_system_error(error: OSError) -> str:
  where = f' {error.filename}' if error.filename else ''
  if error.errno in FULL:
    return (
      f'no space left on the device writing{where} ({error.strerror}): free some space or choose another --workdir '
      'or --out-dir, then run the command again (a training run resumes from its last complete checkpoint)'
    )
  return f'cannot write{where or " here"} ({error.strerror}): make it writable or choose another --workdir or --out-dir'


def run_command(prog: str, fn: Callable[[], int]) -> int:
  """`fn()`'s exit code, or USER_ERROR after one line on stderr when it raises a UserError, FileNotFoundError or
  a file system's refusal (full, read-only)."""
  try:
    return fn()
  except (UserError, FileNotFoundError) as e:  # They carry the way out; other exceptions keep their traceback.
    print(f'{prog}: error: {e}', file=sys.stderr)
    return USER_ERROR
  except Exception as e:
    if (cause := file_system_error(e)) is None:
      raise
    print(f'{prog}: error: {describe_file_system_error(cause)}', file=sys.stderr)
    return USER_ERROR
