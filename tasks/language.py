"""Language-stream tasks: raw text, tokenized, split to the sequence length.

Packing into `LM_SEQ_LEN` rows happens later, in seqio's
`DecoderFeatureConverter`; long documents are first split into pieces of at
most that length so no tail is dropped.
"""

import functools
from typing import Mapping, Optional, Union

import seqio
import tensorflow as tf

from freelm_jax.common import errors
from tasks import sources
from tasks import vocabulary as vocabulary_lib


def register_language(
    name: str,
    source: Union[str, Mapping[str, object], seqio.DataSource],
    text_field: str = 'text',
    *,
    vocabulary: Optional[seqio.Vocabulary] = None,
    shuffle_buffer_size: int = 10_000,
    tfds_data_dir: Optional[str] = None,
) -> seqio.Task:
  """Registers a language-stream task (one document per row) in seqio.

  Args:
    name: the task's name in the seqio registry.
    source: a TFDS name (`"c4/en:3.1.0"`, `"wikipedia/20230601.en"`,
      `"lm1b"`; read from `tfds_data_dir`, never downloaded); split -> path or
      glob of `.jsonl` (a `text_field` per row), `.txt` (one document per
      line) or `.tfrecord` files (tf.train.Example with a string
      `text_field`), `.gz` ok; or any `seqio.DataSource` yielding `text_field`.
    text_field: the field holding the document text.
    vocabulary: seqio vocabulary (default: the embedded demo BPE).
    shuffle_buffer_size: seqio's shuffle buffer for this task.
    tfds_data_dir: data_dir of a TFDS `source`.
  """
  if isinstance(source, str):
    source = sources.tfds_source(source, data_dir=tfds_data_dir)
  elif not isinstance(source, seqio.DataSource):
    source = _file_source(source, text_field)
  vocabulary = vocabulary or vocabulary_lib.demo_vocabulary()
  return seqio.TaskRegistry.add(
      name, source=source,
      preprocessors=[
          functools.partial(seqio.preprocessors.rekey, key_map={'targets': text_field}),
          tokenize_in_batches,
          seqio.preprocessors.append_eos,
          split_to_length,
      ],
      output_features={'targets': seqio.Feature(vocabulary, add_eos=True)},
      shuffle_buffer_size=shuffle_buffer_size)


def _file_source(split_paths, text_field: str) -> seqio.DataSource:
  """A source for JSONL, text-line or TFRecord files, by their file names."""
  names = [p for v in split_paths.values() for p in ([v] if isinstance(v, str) else v)]
  kinds = {_file_kind(p) for p in names}
  if len(kinds) != 1:
    raise errors.ConfigError(f'Language source {dict(split_paths)}: mixes file kinds '
                             f'{sorted(kinds)}; use one of .jsonl, .txt, .tfrecord.')
  kind = kinds.pop()
  if kind == 'jsonl':
    return _jsonl_text_source(split_paths, text_field)
  if kind == 'txt':
    return sources.text_line_source(split_paths, text_field)
  return sources.tfrecord_source(split_paths, text_field)


def _file_kind(path: str) -> str:
  name = path[:-3] if path.endswith('.gz') else path
  for kind, suffixes in (('jsonl', ('.jsonl', '.json')), ('txt', ('.txt', '.text')),
                         ('tfrecord', ('.tfrecord', '.tfrecords'))):
    if name.endswith(suffixes) or any(s + '-' in name or s + '*' in name for s in suffixes):
      return kind
  raise errors.ConfigError(f'Language source {path!r}: cannot tell the file kind; name it '
                           f'*.jsonl, *.txt or *.tfrecord (optionally .gz or sharded -*).')


def _jsonl_text_source(split_paths, text_field: str) -> seqio.DataSource:
  """JSONL rows with a string `text_field` (file:line on a bad row)."""

  def convert(row, where, index):
    del index
    text = row.get(text_field)
    if not isinstance(text, str):
      raise sources.DataError(
          f'{where}: expected a string field {text_field!r} '
          f'(fields: {", ".join(sorted(row))}).')
    return {text_field: text}

  return sources.jsonl_source(
      split_paths, {text_field: tf.TensorSpec([], tf.string)}, convert)


_TOKENIZE_BATCH = 64  # documents per HF encode_batch call


def tokenize_in_batches(dataset: tf.data.Dataset, output_features) -> tf.data.Dataset:
  """Like seqio's `tokenize` for `targets`, one tokenizer call per batch of documents."""
  vocabulary = output_features['targets'].vocabulary
  return dataset.batch(_TOKENIZE_BATCH).map(
      lambda ex: {'targets': tf.cast(vocabulary.encode_tf(ex['targets']), tf.int32)},
      num_parallel_calls=tf.data.AUTOTUNE).unbatch()


def split_to_length(dataset: tf.data.Dataset, sequence_length) -> tf.data.Dataset:
  """Splits `targets` longer than the sequence length into consecutive pieces."""
  length = sequence_length['targets']

  def pieces(ex):
    tokens = ex['targets']
    size = tf.size(tokens)
    lengths = tf.concat([tf.fill([size // length], length), [size % length]], axis=0)
    lengths = tf.boolean_mask(lengths, lengths > 0)
    return {'targets': tf.RaggedTensor.from_row_lengths(tokens, lengths)}

  return dataset.map(pieces).unbatch()


def stream(source, name: str = 'lm_stream', text_field: str = 'text',
           vocab_dir: Optional[str] = None, tfds_data_dir: Optional[str] = None) -> str:
  """Registers a language stream once (e.g. from gin) and returns its name.

  `source` as in `register_language` (a TFDS name such as `'c4/en:3.1.0'` or a
  split -> glob dict); `vocab_dir` holds GPT-2's vocab.json + merges.txt
  (default: the embedded demo BPE). Called from gin, input workers repeat
  the call (`tasks.gin_configurables`).
  """
  if name not in seqio.TaskRegistry.names():
    register_language(name, source, text_field,
                      vocabulary=vocabulary_lib.from_dir(vocab_dir),
                      tfds_data_dir=tfds_data_dir)
  return name
