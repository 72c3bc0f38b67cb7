"""The one base class for errors a user can fix: bad config, data, files or workdir.

Commands print these as one line with the way out and exit non-zero; any other exception is a
bug and keeps its traceback.
"""


class UserError(ValueError):
  """A problem with the input, not with tinycats; the message says what to do."""
