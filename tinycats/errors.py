"""The one base class for errors a user can fix (bad config, data, files or workdir), and the exit codes.

Every command (`tinycats ...`, `python -m launch.modal_train`) prints a user error as one line with the
way out and exits 2; any other exception is a bug, keeps its traceback and exits 1.
"""

import sys
from collections.abc import Callable

USER_ERROR = 2  # Exit code of a user error (argparse's too); an unexpected failure exits 1.


class UserError(ValueError):
  """A problem with the input, not with tinycats; the message says what to do."""


def run_command(prog: str, fn: Callable[[], int]) -> int:
  """`fn()`'s exit code, or USER_ERROR after one line on stderr when it raises a UserError or FileNotFoundError."""
  try:
    return fn()
  except (UserError, FileNotFoundError) as e:  # They carry the way out; other exceptions keep their traceback.
    print(f'{prog}: error: {e}', file=sys.stderr)
    return USER_ERROR
