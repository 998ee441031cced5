"""JSONL data sources that validate every row and name file:line on errors."""

import glob
import gzip
import json
import os
import re
from typing import Callable, Iterator, Mapping, Sequence, Union

import seqio
import tensorflow as tf

SplitPaths = Mapping[str, Union[str, Sequence[str]]]


class DataError(ValueError):
  """Bad input data; the message names the file and line."""


def expand_paths(pattern: Union[str, Sequence[str]]) -> list[str]:
  """Sorted files matching a path, glob, or list of them; errors if none."""
  patterns = [pattern] if isinstance(pattern, str) else list(pattern)
  paths = []
  for p in patterns:
    matched = sorted(glob.glob(os.path.expanduser(p)))
    if not matched:
      raise DataError(f'No file matches {p!r}.')
    paths.extend(matched)
  return paths


def _open(path: str):
  return gzip.open(path, 'rt', encoding='utf-8') if path.endswith('.gz') else open(
      path, encoding='utf-8')


def read_jsonl(paths: Sequence[str]) -> Iterator[tuple[str, dict]]:
  """Yields ("file:line", row) per non-empty line; bad lines raise DataError."""
  for path in paths:
    with _open(path) as f:
      for number, line in enumerate(f, start=1):
        if not line.strip():
          continue
        where = f'{path}:{number}'
        try:
          row = json.loads(line)
        except json.JSONDecodeError as e:
          raise DataError(f'{where}: malformed JSON ({e.msg}).') from None
        if not isinstance(row, dict):
          raise DataError(f'{where}: expected a JSON object, got {type(row).__name__}.')
        yield where, row


def jsonl_source(
    split_paths: SplitPaths,
    output_signature: Mapping[str, tf.TensorSpec],
    convert: Callable[[dict, str, int], dict],
) -> seqio.FunctionDataSource:
  """A seqio source reading JSONL files per split through `convert`.

  `convert(row, where, index)` validates a row (raising DataError naming
  `where`, the row's file:line) and returns a dict matching `output_signature`;
  `index` counts rows across the split's files. Paths are resolved when a
  dataset is created, so registering a task never touches the disk.
  """
  for split, pattern in split_paths.items():
    if not pattern:
      raise ValueError(f'Split {split!r} has no path.')

  def dataset_fn(split: str, shuffle_files: bool, seed=None) -> tf.data.Dataset:
    del shuffle_files, seed  # rows are shuffled downstream by seqio.
    paths = expand_paths(split_paths[split])

    def rows():
      for index, (where, row) in enumerate(read_jsonl(paths)):
        yield convert(row, where, index)

    return tf.data.Dataset.from_generator(rows, output_signature=dict(output_signature))

  return seqio.FunctionDataSource(dataset_fn, splits=list(split_paths))


def explain(error: BaseException) -> str:
  """The DataError line inside an error, even one wrapped by tf.data."""
  match = re.search(r'DataError: (.*)', str(error))
  if match:
    return match.group(1).strip()
  text = ' '.join(str(error).split())
  return text if isinstance(error, (ValueError, OSError)) else f'{type(error).__name__}: {text}'
