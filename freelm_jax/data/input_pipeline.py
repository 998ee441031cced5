"""Batches of both streams from seqio, as numpy dicts for this host.

The language stream goes through seqio's packing `DecoderFeatureConverter`
(with `<|endoftext|>` as the BOS of every packed document, GPT-2 style); the
teacher stream is padded per proposition (seqio has no classification
converter) with explicit `lengths`, or, with `pack_len`, packed several
propositions to a row by seqio's `trim_and_pack_dataset` (the layout of
`packing.py`).

Padding: seqio pads with id 0 and takes `targets != 0` as the loss weights,
but GPT-2's id 0 is "!". So ids are shifted by +1 before seqio packs them and
shifted back after (seqio's padding becomes the vocabulary's `[pad]`): "!" is
trained on and padding is not, whatever the vocabulary's pad id.

Task-type ids: a pipeline given `task_types` (the id order recorded in a
checkpoint) maps each task's type to that order, so ids stay stable across
resumes and machines whatever order this process registered them in.

Each host reads its own shard (`shard_index` of `num_shards`) and yields its
own rows of each batch.

These generators run inside a worker process (`prefetch.ProcessIterator`);
this module never imports JAX.
"""

import hashlib
import os
import re
from typing import Any, Iterator, Optional, Sequence

from absl import logging
import numpy as np
import seqio
import tensorflow as tf

import tasks  # registers the embedded default

from freelm_jax.core import packing

LM_KEYS = {'tokens': 'decoder_input_tokens', 'targets': 'decoder_target_tokens',
           'positions': 'decoder_positions', 'segment_ids': 'decoder_segment_ids',
           'weights': 'decoder_loss_weights'}


def _shard_info(shard_index: int, num_shards: int) -> Optional[seqio.ShardInfo]:
  return seqio.ShardInfo(shard_index, num_shards) if num_shards > 1 else None


def _vocabulary(name: str) -> seqio.Vocabulary:
  return tasks.get_task_or_mixture(name).output_features['targets'].vocabulary


def lm_dataset(name: str, seq_len: int, split: str, seed: Optional[int],
               num_epochs: Optional[int], shard_index: int = 0,
               num_shards: int = 1, shuffle: bool = True) -> tf.data.Dataset:
  """Packed LM rows: tokens, targets, positions, segment_ids, weights.

  Padding positions hold the vocabulary's `pad_id` and weight 0; every real
  token (GPT-2's "!" = id 0 included) has weight 1.
  """
  vocabulary = _vocabulary(name)
  ds = tasks.get_task_or_mixture(name).get_dataset(
      sequence_length={'targets': seq_len}, split=split, shuffle=shuffle,
      seed=seed, num_epochs=num_epochs,
      shard_info=_shard_info(shard_index, num_shards), use_cached=False)
  ds = ds.map(lambda ex: {'targets': ex['targets'] + 1})  # frees id 0 for padding
  converter = seqio.DecoderFeatureConverter(pack=True, bos_id=vocabulary.eos_id + 1)
  ds = converter(ds, {'targets': seq_len})
  unshift = lambda ids: tf.where(ids == 0, vocabulary.pad_id, ids - 1)

  def to_model(ex):
    out = {k: tf.cast(ex[v], tf.int32) for k, v in LM_KEYS.items()}
    padding = out['segment_ids'] == 0  # seqio puts a BOS after the last segment
    out['tokens'] = tf.where(padding, vocabulary.pad_id, unshift(out['tokens']))
    out['targets'] = unshift(out['targets'])
    out['weights'] = tf.cast(out['weights'], tf.float32)
    return out

  return ds.map(to_model)


def lm_batches(name: str, seq_len: int, batch_size: int, seed: int,
               split: str = 'train', skip_batches: int = 0, shard_index: int = 0,
               num_shards: int = 1, state_dir: Optional[str] = None,
               snapshot_every: int = 0, keep_snapshots: int = 5,
               snapshot_until: Optional[int] = None) -> Iterator[dict]:
  """Endless packed LM batches: tokens, targets, positions, segment_ids, weights.

  Starts after `skip_batches` batches; see `resumable_batches` for `state_dir`.
  """
  ds = lm_dataset(name, seq_len, split, seed, None, shard_index, num_shards)
  ds = ds.batch(batch_size, drop_remainder=True)
  fingerprint = (name, seq_len, batch_size, seed, split, shard_index, num_shards)
  return resumable_batches(ds, skip_batches, IteratorSnapshots.create(
      state_dir, fingerprint, snapshot_every, keep_snapshots, snapshot_until))


def _proposition_features(task_type_ids: tf.Tensor):
  """Model features of propositions (one or a batch; `targets` come padded):
  `tokens`, `lengths`, `weights`, and `task_type` mapped through `task_type_ids`."""

  def convert(ex):
    ex = dict(ex)
    tokens, lengths = ex.pop('targets'), ex.pop('length')
    return dict(ex, tokens=tokens, lengths=lengths,
                weights=tf.ones_like(lengths, tf.float32),
                task_type=tf.gather(task_type_ids, ex['task_type']))

  return convert


def task_type_remap(recorded: Optional[Sequence[str]]) -> list[int]:
  """This process's task-type id -> the id in `recorded` (new types appended)."""
  local = list(tasks.task_types())
  order = list(recorded or local)
  order += [t for t in local if t not in order]
  return [order.index(t) for t in local]


def teacher_dataset(name: str, seq_len: int, split: str, shuffle: bool,
                    seed: Optional[int], num_epochs: Optional[int],
                    shard_index: int = 0, num_shards: int = 1,
                    task_types: Optional[Sequence[str]] = None,
                    batch_size: Optional[int] = None,
                    every_template: bool = False) -> tf.data.Dataset:
  """Propositions of a teacher task or mixture, model features.

  `task_types`: the task-type id order to use (e.g. a checkpoint's).
  `batch_size`: batches of that many (the remainder dropped), with the
  features made once per batch; else single propositions.
  `every_template`: every template of every label, once, in order (a task's
  split for evaluation; the other reading arguments are then unused).
  """
  if every_template:
    ds = tasks.propositions.every_template_dataset(name, split, seq_len)
  else:
    ds = tasks.get_task_or_mixture(name).get_dataset(  # fitted to seq_len, padded
        sequence_length={'targets': seq_len}, split=split, shuffle=shuffle,
        seed=seed, num_epochs=num_epochs, trim_output_features=False,
        shard_info=_shard_info(shard_index, num_shards), use_cached=False)
    ds = ds.unbatch()  # examples (shuffled) -> their propositions, kept adjacent
  if batch_size:
    ds = ds.batch(batch_size, drop_remainder=True)
  remap = tf.constant(task_type_remap(task_types), tf.int32)
  return ds.map(_proposition_features(remap))


def teacher_batches(name: str, seq_len: int, batch_size: int, seed: int,
                    split: str = 'train', skip_batches: int = 0, shard_index: int = 0,
                    num_shards: int = 1,
                    task_types: Optional[Sequence[str]] = None,
                    state_dir: Optional[str] = None, snapshot_every: int = 0,
                    keep_snapshots: int = 5,
                    snapshot_until: Optional[int] = None,
                    pack_len: int = 0) -> Iterator[dict]:
  """Endless shuffled proposition batches for training: `batch_size` rows of
  one proposition each, or with `pack_len`, rows of `pack_len` tokens holding
  several (`pack_propositions`).

  Starts after `skip_batches` batches; see `resumable_batches` for `state_dir`.
  """
  ds = teacher_dataset(name, seq_len, split, shuffle=True, seed=seed, num_epochs=None,
                       shard_index=shard_index, num_shards=num_shards,
                       task_types=task_types, batch_size=None if pack_len else batch_size)
  if pack_len:
    ds = pack_propositions(ds, pack_len, _vocabulary(name).pad_id)
    ds = ds.batch(batch_size, drop_remainder=True)
  else:
    ds = ds.map(lambda ex: {k: ex[k] for k in
                            ('tokens', 'lengths', 'truth', 'task_type', 'weights')})
  fingerprint = (name, seq_len, batch_size, seed, split, shard_index, num_shards,
                 list(task_types or [])) + ((pack_len,) if pack_len else ())
  return resumable_batches(ds, skip_batches, IteratorSnapshots.create(
      state_dir, fingerprint, snapshot_every, keep_snapshots, snapshot_until))


def pack_propositions(ds: tf.data.Dataset, pack_len: int, pad_id: int) -> tf.data.Dataset:
  """Single propositions (`teacher_dataset` features) -> packed rows of
  `pack_len` tokens: `tokens`, `positions`, `segment_ids` [pack_len] and
  `cls_index`, `truth`, `task_type`, `weights` [packing.max_per_row(pack_len)].

  seqio's packing fills a row with propositions in stream order and starts the
  next row at the first one that does not fit. It counts non-zero ids, so the
  tokens go in shifted by one, with a parallel `codes` sequence (1 on every
  token, 2 + truth + 2 x task_type on `[cls]`) that carries the labels.
  """
  max_per_row = packing.max_per_row(pack_len)

  def to_sequences(ex):
    length = ex['lengths']
    label = 2 + tf.cast(ex['truth'], tf.int32) + 2 * tf.cast(ex['task_type'], tf.int32)
    return {'tokens': tf.cast(ex['tokens'][:length], tf.int32) + 1,
            'codes': tf.concat([tf.ones([length - 1], tf.int32), [label]], 0)}

  def to_model(row):
    segment_ids = row['tokens_segment_ids']
    cls_index = tf.cast(tf.where(row['codes'] >= 2)[:, 0], tf.int32)
    labels = tf.gather(row['codes'], cls_index) - 2
    pad = lambda t: tf.ensure_shape(tf.pad(t, [[0, max_per_row - tf.size(t)]]), [max_per_row])
    return {'tokens': tf.where(segment_ids == 0, pad_id, row['tokens'] - 1),
            'positions': row['tokens_positions'], 'segment_ids': segment_ids,
            'cls_index': pad(cls_index), 'truth': pad(labels % 2),
            'task_type': pad(labels // 2),
            'weights': pad(tf.ones_like(cls_index, tf.float32))}

  ds = seqio.utils.trim_and_pack_dataset(ds.map(to_sequences),
                                         {'tokens': pack_len, 'codes': pack_len})
  return ds.map(to_model)


class IteratorSnapshots:
  """tf.data iterator checkpoints of one stream, every `every` batches (and
  none after `until` batches, what the run reads).

  A snapshot `<directory>/<fingerprint>-<count>` is the iterator's state after
  `count` batches (whenever the worker got there: the prefetch queue may run
  ahead of the trainer, so counts, not times, name snapshots). Its `.done`
  marker is written last, so a half-written snapshot is never read (this works
  on object stores too). `fingerprint` identifies the pipeline's arguments: a
  changed batch size or seed never restores an old snapshot.
  """

  def __init__(self, directory: str, fingerprint: str, every: int, keep: int,
               until: Optional[int] = None):
    self.directory, self.fingerprint = directory, fingerprint
    self.every, self.keep, self.until = every, keep, until
    self.enabled = True

  @classmethod
  def create(cls, directory: Optional[str], fingerprint, every: int, keep: int,
             until: Optional[int] = None) -> Optional['IteratorSnapshots']:
    if not directory or every <= 0:
      return None
    digest = hashlib.sha1(repr(fingerprint).encode()).hexdigest()[:10]
    tf.io.gfile.makedirs(directory)
    return cls(directory, digest, every, keep, until)

  def _prefix(self, count: int) -> str:
    return os.path.join(self.directory, f'{self.fingerprint}-{count:010d}')

  def counts(self) -> list[int]:
    """Batch counts of the complete snapshots, ascending."""
    markers = tf.io.gfile.glob(os.path.join(self.directory, f'{self.fingerprint}-*.done'))
    return sorted(int(m[:-len('.done')].rsplit('-', 1)[1]) for m in markers)

  def restore(self, ds: tf.data.Dataset, upto: int) -> tuple[Any, int]:
    """(iterator of `ds`, count) at the newest snapshot at or before `upto`.

    The count is 0 (a fresh iterator) when none restores.
    """
    for count in reversed([c for c in self.counts() if c <= upto]):
      iterator = iter(ds)
      try:
        tf.train.Checkpoint(iterator=iterator).read(self._prefix(count)).assert_consumed()
        return iterator, count
      except (tf.errors.OpError, AssertionError, ValueError) as e:
        logging.warning('Input snapshot %s does not restore (%s); trying an older one.',
                        self._prefix(count), ' '.join(str(e).split())[:200])
    return iter(ds), 0

  def maybe_save(self, iterator, count: int) -> None:
    """Saves the iterator's state after `count` batches, on the schedule."""
    if (not self.enabled or count == 0 or count % self.every
        or (self.until is not None and count > self.until)):
      return
    prefix = self._prefix(count)
    if tf.io.gfile.exists(prefix + '.done'):
      return  # the stream is deterministic: the same state.
    try:
      tf.train.Checkpoint(iterator=iterator).write(prefix)
    except (tf.errors.FailedPreconditionError, tf.errors.UnimplementedError) as e:
      self.enabled = False
      logging.warning(
          'Input stream %s: its iterator state cannot be saved (%s); a resume '
          'skips the consumed batches instead (exact, but it re-reads them).',
          self.directory, re.sub(r'\{\{.*?\}\}\s*', '', e.message).split(' [Op')[0])
      return
    with tf.io.gfile.GFile(prefix + '.done', 'w') as f:
      f.write(str(count))
    for old in self.counts()[:-self.keep]:
      tf.io.gfile.remove(self._prefix(old) + '.done')
      for path in tf.io.gfile.glob(self._prefix(old) + '.*'):
        tf.io.gfile.remove(path)


def resumable_batches(ds: tf.data.Dataset, skip_batches: int,
                      snapshots: Optional[IteratorSnapshots]) -> Iterator[dict]:
  """Numpy batches of `ds` after its first `skip_batches`.

  With `snapshots`, restores the newest snapshot at or before `skip_batches`
  and reads on from there (at most `snapshots.every` batches are re-read), and
  saves snapshots as it goes; without, or when none fits, reads from the start.
  """
  ds = ds.prefetch(2)
  iterator, count = (snapshots.restore(ds, skip_batches) if snapshots and skip_batches
                     else (iter(ds), 0))
  for _ in range(skip_batches - count):
    next(iterator)
  count = skip_batches
  while True:
    if snapshots:
      snapshots.maybe_save(iterator, count)
    try:
      batch = next(iterator)
    except StopIteration:
      return
    count += 1
    yield tf.nest.map_structure(lambda t: t.numpy(), batch)


def eval_batches(names: Sequence[str], seq_len: int, batch_size: int, split: str,
                 task_types: Optional[Sequence[str]] = None,
                 max_examples: Optional[int] = None,
                 every_template: bool = False) -> Iterator[tuple[str, dict]]:
  """(task, batch) for every proposition of each task's split once, in order.

  The last batch of a task is padded with rows of weight 0, so every batch
  has `batch_size` rows (one compiled scoring function). `max_examples`
  scores only each task's first examples; `every_template`: each label with
  every template, not the drawn one.
  """
  for name in names:
    ds = teacher_dataset(name, seq_len, split, shuffle=False, seed=None, num_epochs=1,
                         task_types=task_types, every_template=every_template)
    if max_examples is not None:
      ds = ds.take_while(lambda ex: ex["example_id"] < max_examples)
    for batch in ds.batch(batch_size).prefetch(2).as_numpy_iterator():
      yield name, _pad_rows(batch, batch_size)


def _pad_rows(batch: dict, batch_size: int) -> dict:
  """A short last batch padded to `batch_size` with rows of zeros (weight 0)."""
  rows = len(batch['tokens'])
  if rows == batch_size:
    return batch
  return {k: np.concatenate([v, np.zeros((batch_size - rows,) + v.shape[1:], v.dtype)])
          for k, v in batch.items()}


def lm_eval_batches(name: str, seq_len: int, batch_size: int, split: str,
                    max_batches: Optional[int] = None) -> Iterator[dict]:
  """Packed LM batches of a split, once, in order, at most `max_batches`; the
  last one padded with rows of weight 0. None when the task has no `split`."""
  if split not in tasks.get_task_or_mixture(name).splits:
    return
  ds = lm_dataset(name, seq_len, split, seed=None, num_epochs=1, shuffle=False)
  ds = ds.batch(batch_size)
  if max_batches:
    ds = ds.take(max_batches)
  for batch in ds.prefetch(2).as_numpy_iterator():
    yield _pad_rows(batch, batch_size)
