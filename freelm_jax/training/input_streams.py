"""The train streams, each read by its own input worker process.

A stream resumes past the batches a checkpoint consumed, from its worker's
newest iterator snapshot (`input_pipeline.IteratorSnapshots`).
"""

import os
from typing import Optional, Sequence

import jax

from freelm_jax.common import errors
from freelm_jax.core import schedules
from freelm_jax.core import trainer as trainer_lib
from freelm_jax.data import prefetch


def open_streams(data, schedule: schedules.Schedule, consumed: dict,
                 seed: int, trainer: trainer_lib.Trainer,
                 task_types: Optional[Sequence[str]] = None,
                 state_dir: Optional[str] = None, snapshot_steps: int = 0,
                 train_steps: Optional[int] = None) -> dict:
  """The streams the schedule's objectives read, past the batches already
  `consumed` (stream -> batches); `data`: a `train_lib.DataConfig`.

  With `state_dir`, each worker snapshots its iterator there as often as
  every `snapshot_steps` steps feed it (`input_pipeline.IteratorSnapshots`),
  up to what the run's `train_steps` read: a worker runs ahead of the
  trainer, and a snapshot past the run's end would never be restored.

  Each runs in its own worker process and yields this host's rows: input
  shard `trainer.data_shard` = (index, count) of the seqio datasets. A worker
  rebuilds the tasks from `prefetch.worker_setup()` and takes the teacher's
  task-type ids (`task_types`, decided here) from its arguments.
  """
  index, num_shards = trainer.data_shard
  specs = {
      'lm': ('lm_batches', data.lm_task, data.lm_seq_len, data.lm_batch_size),
      'teacher': ('teacher_batches', data.teacher_mixture, data.teacher_seq_len,
                  data.teacher_batch_size)}
  streams, setup = {}, prefetch.worker_setup()
  last = trainer.stream_counts(schedule, train_steps) if train_steps is not None else {}
  for stream, every in trainer.stream_counts(schedule, snapshot_steps).items():
    function, name, seq_len, batch_size = specs[stream]
    snapshots = dict(
        state_dir=os.path.join(state_dir, f'{stream}.process{jax.process_index()}'),
        snapshot_every=every, keep_snapshots=5 + 10 // max(every, 1),
        snapshot_until=last.get(stream)) if state_dir else {}
    streams[stream] = prefetch.ProcessIterator(
        f'freelm_jax.data.input_pipeline.{function}',
        dict(name=name, seq_len=seq_len, batch_size=_per_host(batch_size, num_shards),
             seed=seed, skip_batches=consumed.get(stream, 0), shard_index=index,
             num_shards=num_shards, **snapshots,
             **(_teacher_args(data, task_types) if stream == 'teacher' else {})),
        setup)
  return streams


def _teacher_args(data, task_types: Optional[Sequence[str]]) -> dict:
  """The teacher pipeline's own arguments: packing, and the task-type ids."""
  return ({'pack_len': data.teacher_pack_len} if data.teacher_pack_len else {}) | (
      {'task_types': list(task_types)} if task_types else {})


def _per_host(global_batch_size: int, num_hosts: int) -> int:
  if global_batch_size % num_hosts:
    raise errors.ConfigError(f'Batch size {global_batch_size} does not divide over '
                             f'{num_hosts} processes.')
  return global_batch_size // num_hosts
