"""Batches of both streams from seqio, as numpy dicts for this host.

The language stream goes through seqio's packing `DecoderFeatureConverter`
(with `<|endoftext|>` as the BOS of every packed document, GPT-2 style); the
teacher stream is padded per proposition (seqio has no classification
converter). Each host reads its own shard (`shard_index` of `num_shards`) and
yields its own rows of each batch.

These generators run inside a worker process (`prefetch.ProcessIterator`);
this module never imports JAX.
"""

from typing import Iterator, Optional, Sequence

import numpy as np
import seqio
import tensorflow as tf

import tasks  # registers the embedded default  # pylint: disable=unused-import

LM_KEYS = {'tokens': 'decoder_input_tokens', 'targets': 'decoder_target_tokens',
           'positions': 'decoder_positions', 'segment_ids': 'decoder_segment_ids',
           'weights': 'decoder_loss_weights'}


def _shard_info(shard_index: int, num_shards: int) -> Optional[seqio.ShardInfo]:
  return seqio.ShardInfo(shard_index, num_shards) if num_shards > 1 else None


def _vocabulary(name: str) -> seqio.Vocabulary:
  return seqio.get_mixture_or_task(name).output_features['targets'].vocabulary


def lm_batches(name: str, seq_len: int, batch_size: int, seed: int,
               split: str = 'train', skip_batches: int = 0, shard_index: int = 0,
               num_shards: int = 1) -> Iterator[dict]:
  """Endless packed LM batches: tokens, targets, positions, segment_ids, weights."""
  eos_id = _vocabulary(name).eos_id
  ds = seqio.get_dataset(
      name, task_feature_lengths={'targets': seq_len}, dataset_split=split,
      shuffle=True, num_epochs=None, seed=seed,
      shard_info=_shard_info(shard_index, num_shards),
      feature_converter=seqio.DecoderFeatureConverter(pack=True, bos_id=eos_id))
  ds = ds.map(lambda ex: {k: tf.cast(ex[v], tf.float32 if k == 'weights' else tf.int32)
                          for k, v in LM_KEYS.items()})
  ds = ds.batch(batch_size, drop_remainder=True)
  return ds.skip(skip_batches).prefetch(2).as_numpy_iterator()


def _proposition_features(seq_len: int, pad_id: int):
  """Pads `targets` to `seq_len` as `tokens`; adds `lengths` and `weights`."""

  def convert(ex):
    targets = ex.pop('targets')
    length = tf.size(targets)
    tokens = tf.pad(targets, [[0, seq_len - length]], constant_values=pad_id)
    return dict(ex, tokens=tf.ensure_shape(tokens, [seq_len]),
                lengths=tf.cast(length, tf.int32), weights=tf.constant(1.0))

  return convert


def teacher_dataset(name: str, seq_len: int, split: str, shuffle: bool,
                    seed: Optional[int], num_epochs: Optional[int],
                    shard_index: int = 0, num_shards: int = 1) -> tf.data.Dataset:
  """Unbatched propositions of a teacher task or mixture, model features."""
  provider = seqio.get_mixture_or_task(name)
  ds = provider.get_dataset(
      sequence_length={'targets': seq_len}, split=split, shuffle=shuffle,
      seed=seed, num_epochs=num_epochs,
      shard_info=_shard_info(shard_index, num_shards), use_cached=False)
  return ds.map(_proposition_features(seq_len, _vocabulary(name).pad_id))


def teacher_batches(name: str, seq_len: int, batch_size: int, seed: int,
                    split: str = 'train', skip_batches: int = 0, shard_index: int = 0,
                    num_shards: int = 1) -> Iterator[dict]:
  """Endless shuffled proposition batches for training."""
  ds = teacher_dataset(name, seq_len, split, shuffle=True, seed=seed, num_epochs=None,
                       shard_index=shard_index, num_shards=num_shards)
  ds = ds.map(lambda ex: {k: ex[k] for k in
                          ('tokens', 'lengths', 'truth', 'task_type', 'weights')})
  ds = ds.batch(batch_size, drop_remainder=True)
  return ds.skip(skip_batches).prefetch(2).as_numpy_iterator()


def eval_batches(names: Sequence[str], seq_len: int, batch_size: int,
                 split: str) -> Iterator[tuple[str, dict]]:
  """(task, batch) for every proposition of each task's split once, in order.

  The last batch of a task is padded with rows of weight 0, so every batch
  has `batch_size` rows (one compiled scoring function).
  """
  for name in names:
    ds = teacher_dataset(name, seq_len, split, shuffle=False, seed=None, num_epochs=1)
    for batch in ds.batch(batch_size).prefetch(2).as_numpy_iterator():
      rows = len(batch['tokens'])
      if rows < batch_size:
        batch = {k: np.concatenate([v, np.zeros((batch_size - rows,) + v.shape[1:], v.dtype)])
                 for k, v in batch.items()}
      yield name, batch
