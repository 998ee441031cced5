"""Data sources: checked JSONL, text lines, TFRecords, and prepared TFDS datasets.

`source` arguments of `tasks.register` / `tasks.register_language` accept a
TFDS name (`"glue/rte:2.0.0"`), a split -> path/glob mapping, or any
`seqio.DataSource`. JSONL rows are validated and errors name file:line; local
paths and `gs://` globs both work (through `tf.io.gfile`).
"""

import functools
import glob
import gzip
import io
import os
from typing import Callable, Iterator, Mapping, Optional, Sequence, Union

import numpy as np
import seqio
import tensorflow as tf

from freelm_jax.common import errors
from freelm_jax.common import jsonl

SplitPaths = Mapping[str, Union[str, Sequence[str]]]
DataError = errors.DataError  # bad input data; the message names the file and line


def expand_paths(pattern: Union[str, Sequence[str]]) -> list[str]:
  """Sorted files matching a path, glob, or list of them; errors if none."""
  patterns = [pattern] if isinstance(pattern, str) else list(pattern)
  paths = []
  for p in patterns:
    matched = (sorted(tf.io.gfile.glob(p)) if '://' in p
               else sorted(glob.glob(os.path.expanduser(p))))
    if not matched:
      raise DataError(f'No file matches {p!r}.')
    paths.extend(matched)
  return paths


def _open(path: str):
  """A text reader for a local or remote (`gs://`) file, `.gz` decompressed."""
  if '://' not in path:
    return jsonl.open_text(path)
  raw = tf.io.gfile.GFile(path, 'rb')
  if path.endswith('.gz'):
    raw = gzip.GzipFile(fileobj=raw)
  return io.TextIOWrapper(raw, encoding='utf-8')


def read_jsonl(paths: Sequence[str]) -> Iterator[tuple[str, dict]]:
  """Yields ("file:line", row) per non-empty line; bad lines raise DataError."""
  return jsonl.read(paths, _open)


_CHUNK = 512  # JSONL rows parsed per Python call


def _numbered_chunks(path: tf.Tensor) -> tf.data.Dataset:
  """A file's lines in chunks of `_CHUNK`: (path, line numbers, lines); `.gz` ok."""
  compression = tf.where(tf.strings.regex_full_match(path, r'.*\.gz'), 'GZIP', '')
  lines = tf.data.TextLineDataset(path, compression_type=compression)
  return lines.enumerate(start=1).batch(_CHUNK).map(
      lambda numbers, chunk: (path, numbers, chunk))


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

  Lines are read by `tf.data.TextLineDataset` (so the iterator can be
  checkpointed) and parsed in chunks of `_CHUNK` rows by one Python call each.
  """
  for split, pattern in split_paths.items():
    if not pattern:
      raise errors.ConfigError(f'Split {split!r} has no path.')
  names = list(output_signature)
  dtypes = [output_signature[name].dtype for name in names]

  def parse_chunk(path, numbers, lines, first_index):
    columns, index, path = [[] for _ in names], int(first_index), path.decode()
    for number, line in zip(numbers, lines):
      if not line.strip():
        continue
      where = f'{path}:{number}'
      values = convert(jsonl.parse_line(line, where), where, index)
      index += 1
      for column, name in zip(columns, names):
        column.append(values[name])
    return [np.asarray(column, object if dtype == tf.string else dtype.as_numpy_dtype)
            for column, dtype in zip(columns, dtypes)]

  def parse(path, numbers, lines, first_index):
    columns = tf.numpy_function(parse_chunk, [path, numbers, lines, first_index], dtypes,
                                stateful=False)
    return {name: tf.ensure_shape(column, [None] + output_signature[name].shape.as_list())
            for name, column in zip(names, columns)}

  def dataset_fn(split: str, shuffle_files: bool, seed=None) -> tf.data.Dataset:
    del shuffle_files, seed  # rows are shuffled downstream by seqio.
    paths = expand_paths(split_paths[split])
    chunks = tf.data.Dataset.from_tensor_slices(paths).flat_map(_numbered_chunks)
    # `index` of a chunk's first row: non-blank lines before it (a running count).
    chunks = chunks.scan(tf.constant(0, tf.int64), lambda seen, chunk: (
        seen + tf.reduce_sum(tf.cast(tf.strings.strip(chunk[2]) != '', tf.int64)),
        chunk + (seen,)))
    return chunks.map(parse, num_parallel_calls=tf.data.AUTOTUNE).unbatch()

  return _CountingSource(dataset_fn, split_paths)


_SELECTOR_BLOCK = 1024  # mixture draws made per random op


def sample_from_datasets(datasets: Sequence[tf.data.Dataset], weights: Sequence[float],
                         seed: Optional[int] = None) -> tf.data.Dataset:
  """`tf.data.Dataset.sample_from_datasets`, with the draws made in blocks.

  The same distribution (each element from dataset i with probability
  weights[i] / sum(weights), stops when the drawn dataset is empty), but one
  categorical op per `_SELECTOR_BLOCK` draws instead of one per element (TF's
  costs ~40 us per element, serially). A seqio `Mixture` `sample_fn`; its
  iterator can be checkpointed.
  """
  kept = [(d, w) for d, w in zip(datasets, weights) if w > 0]
  if not kept:
    raise errors.ConfigError('sample_from_datasets: every weight is zero.')
  if len(kept) == 1:
    return kept[0][0]
  datasets, weights = zip(*kept)
  logits = tf.math.log(tf.constant([weights], tf.float32))
  selector = tf.data.Dataset.random(seed=seed).batch(2).map(
      lambda pair: tf.random.stateless_categorical(logits, _SELECTOR_BLOCK, seed=pair)[0])
  return tf.data.Dataset.choose_from_datasets(
      list(datasets), selector.unbatch(), stop_on_empty_dataset=True)


class _CountingSource(seqio.FunctionDataSource):
  """A FunctionDataSource that counts its JSONL rows on demand (mixing rates)."""

  def __init__(self, dataset_fn, split_paths: SplitPaths):
    super().__init__(dataset_fn, splits=list(split_paths))
    self._split_paths = dict(split_paths)

  @functools.lru_cache(maxsize=None)
  def num_input_examples(self, split: str) -> int:
    count = 0
    for path in expand_paths(self._split_paths[split]):
      with _open(path) as f:
        count += sum(1 for line in f if line.strip())
    return count


def text_line_source(split_paths: SplitPaths, text_field: str) -> seqio.DataSource:
  """One document per line of text files (`.gz` ok): {text_field: line}."""

  def dataset_fn(split: str, shuffle_files: bool, seed=None) -> tf.data.Dataset:
    del shuffle_files, seed
    paths = expand_paths(split_paths[split])
    compression = 'GZIP' if all(p.endswith('.gz') for p in paths) else None
    ds = tf.data.TextLineDataset(paths, compression_type=compression)
    return ds.filter(lambda line: tf.strings.length(tf.strings.strip(line)) > 0).map(
        lambda line: {text_field: line})

  return seqio.FunctionDataSource(dataset_fn, splits=list(split_paths))


def tfrecord_source(split_paths: SplitPaths, text_field: str) -> seqio.DataSource:
  """tf.train.Example records with a string feature `text_field`."""
  return seqio.TFExampleDataSource(
      dict(split_paths),
      feature_description={text_field: tf.io.FixedLenFeature([], tf.string)})


class PreparedTfdsSource(seqio.TfdsDataSource):
  """A TFDS source that never downloads: an unprepared dataset is one clear error."""

  def __init__(self, tfds_name: str, splits=None, data_dir: Optional[str] = None):
    super().__init__(tfds_name=tfds_name, tfds_data_dir=data_dir, splits=splits,
                     read_only=True)

  def get_dataset(self, *args, **kwargs) -> tf.data.Dataset:
    try:
      return super().get_dataset(*args, **kwargs)
    except (AssertionError, FileNotFoundError, tf.errors.NotFoundError) as e:
      name = self.tfds_dataset.name
      data_dir = self.tfds_dataset.data_dir or os.environ.get(
          'TFDS_DATA_DIR', '~/tensorflow_datasets')
      raise DataError(
          f'TFDS dataset {name!r} is not prepared in data_dir {data_dir!r}: prepare '
          f'it with `tfds build {name.split(":")[0]} --data_dir=DIR` and pass '
          f'that data_dir (no download is attempted). ({type(e).__name__})') from None

  def num_input_examples(self, split: str) -> Optional[int]:
    try:
      return super().num_input_examples(split)
    except KeyError:  # no split statistics (e.g. tfds.testing.mock_data)
      return None


def tfds_source(name: str, splits=None, data_dir: Optional[str] = None) -> seqio.DataSource:
  """A prepared TFDS dataset, e.g. `"glue/rte:2.0.0"`; `splits`: names or name -> TFDS split."""
  if not name or name.startswith(('/', '.')) or '://' in name:
    raise errors.ConfigError(f'{name!r} is not a TFDS name (e.g. "glue/rte:2.0.0").')
  return PreparedTfdsSource(name, splits=splits, data_dir=data_dir)


def explain(error: BaseException) -> str:
  """The one line of a user's error, even one wrapped by tf.data
  (`errors.user_message`); else the error's type and text."""
  message = errors.user_message(error) or errors.error_in_tf_message(error)
  if message is not None:
    return message
  text = ' '.join(str(error).split())
  return text if isinstance(error, (ValueError, OSError)) else f'{type(error).__name__}: {text}'
