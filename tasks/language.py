"""Language-stream tasks: raw text, tokenized, split to the sequence length.

Packing into `LM_SEQ_LEN` rows happens later, in seqio's
`DecoderFeatureConverter`; long documents are first split into pieces of at
most that length so no tail is dropped.
"""

import functools
from typing import Mapping, Optional, Union

import seqio
import tensorflow as tf

from tasks import sources
from tasks import vocabulary as vocabulary_lib


def register_language(
    name: str,
    source: Union[Mapping[str, object], seqio.DataSource],
    text_field: str = 'text',
    *,
    vocabulary: Optional[seqio.Vocabulary] = None,
    shuffle_buffer_size: int = 10_000,
) -> seqio.Task:
  """Registers a language-stream task (one document per row) in seqio.

  Args:
    name: the task's name in the seqio registry.
    source: split -> JSONL path/glob with a `text_field` per row, or any
      `seqio.DataSource` yielding `text_field`.
    text_field: the field holding the document text.
    vocabulary: seqio vocabulary (default: the embedded demo BPE).
    shuffle_buffer_size: seqio's shuffle buffer for this task.
  """
  if not isinstance(source, seqio.DataSource):
    source = _jsonl_text_source(source, text_field)
  vocabulary = vocabulary or vocabulary_lib.demo_vocabulary()
  return seqio.TaskRegistry.add(
      name, source=source,
      preprocessors=[
          functools.partial(seqio.preprocessors.rekey, key_map={'targets': text_field}),
          seqio.preprocessors.tokenize,
          seqio.preprocessors.append_eos,
          split_to_length,
      ],
      output_features={'targets': seqio.Feature(vocabulary, add_eos=True)},
      shuffle_buffer_size=shuffle_buffer_size)


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


def split_to_length(dataset: tf.data.Dataset, sequence_length) -> tf.data.Dataset:
  """Splits `targets` longer than the sequence length into consecutive pieces."""
  length = sequence_length['targets']

  def pieces(ex):
    tokens = ex['targets']
    starts = tf.range(0, tf.size(tokens), length)
    return tf.data.Dataset.from_tensor_slices(starts).map(
        lambda start: {'targets': tokens[start:start + length]})

  return dataset.flat_map(pieces)
