"""JSON Lines rows whose errors name their file:line; no TensorFlow.

Blank lines are skipped; any other line must hold one JSON object. A bad line
raises `errors.DataError` with the one-line message `file:line: ...`.
"""

import gzip
import json
from typing import Callable, Iterator, Sequence, TextIO, Union

from freelm_jax.common import errors


def open_text(path: str) -> TextIO:
  """A UTF-8 text reader of a local file, `.gz` decompressed."""
  if path.endswith('.gz'):
    return gzip.open(path, 'rt', encoding='utf-8')
  return open(path, encoding='utf-8')


def parse_line(line: Union[bytes, str], where: str) -> dict:
  """The JSON object of one line; anything else raises DataError naming `where`."""
  try:
    row = json.loads(line)
  except json.JSONDecodeError as e:
    raise errors.DataError(f'{where}: malformed JSON ({e.msg}).') from None
  if not isinstance(row, dict):
    raise errors.DataError(f'{where}: expected a JSON object, got {type(row).__name__}.')
  return row


def read(paths: Sequence[str], open_file: Callable[[str], TextIO] = open_text
         ) -> Iterator[tuple[str, dict]]:
  """Yields ("file:line", row) per non-blank line of `paths`, opened by `open_file`."""
  for path in paths:
    with open_file(path) as f:
      for number, line in enumerate(f, start=1):
        if line.strip():
          where = f'{path}:{number}'
          yield where, parse_line(line, where)
