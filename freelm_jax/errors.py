"""Errors a user can fix, and how the entry points report them.

Every command-line tool ends on such an error with one line, `error: ...`,
on stderr and exit status 1. Nothing heavy is imported here.
"""


class CheckpointError(ValueError):
  """A checkpoint that cannot be read, mapped, used or written; the message names it."""
