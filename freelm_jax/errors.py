"""Errors a user can fix, and how the entry points report them.

Every command-line tool ends on such an error with one line, `error: ...`,
on stderr and exit status 1. Nothing heavy is imported here.
"""

import contextlib
import os
import sys
from typing import NoReturn


class DataError(ValueError):
  """Bad input data; the message names the file and line."""


class CheckpointError(ValueError):
  """A checkpoint that cannot be read, mapped, used or written; the message names it."""


def exit_with(message: object) -> NoReturn:
  """Exits with the one line `error: message`."""
  sys.exit(f'error: {message}')


@contextlib.contextmanager
def exit_on(*error_types: type[BaseException]):
  """Turns an error of `error_types` raised in the block into `exit_with`."""
  try:
    yield
  except error_types as e:
    exit_with(e)


def exit_now(message: object) -> NoReturn:
  """`exit_with` from any thread, even while the main one is blocked in C++."""
  print(f'error: {message}', file=sys.stderr, flush=True)
  os._exit(1)  # pylint: disable=protected-access
