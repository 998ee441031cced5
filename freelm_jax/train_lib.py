"""The training loop: it only orchestrates data, steps, logging, checkpoints.

Step numbers count updates from 0; with the 'parity' schedule step 0 trains on
language, step 1 on the teacher signal, and so on. Re-running on the same
model_dir resumes from the newest checkpoint; each stream then skips the
batches it already consumed (the pipelines are seeded, so the resumed run
sees the batches an uninterrupted run would).
"""

import dataclasses
import os
import time
from typing import Callable, Optional, Sequence

from absl import logging
import gin
import jax
import numpy as np
import optax

from freelm_jax import checkpoints
from freelm_jax import evaluation
from freelm_jax import gin_utils
from freelm_jax import metrics as metrics_lib
from freelm_jax import models
from freelm_jax import network
from freelm_jax import partitioning
from freelm_jax import prefetch
from freelm_jax import trainer as trainer_lib
import tasks

# Gin-configured constructors (the library modules themselves know no gin).
ModelConfig = gin.external_configurable(network.ModelConfig, module='network')
TeacherObjective = gin.external_configurable(models.TeacherObjective, module='models')
create_optimizer = gin.external_configurable(trainer_lib.create_optimizer, module='trainer')


@gin.configurable(module='train_lib')
@dataclasses.dataclass(frozen=True)
class DataConfig:
  """The two input streams and the held-out evaluation tasks."""

  lm_task: str = gin.REQUIRED
  teacher_mixture: str = gin.REQUIRED
  eval_tasks: Sequence[str] = ()
  eval_split: str = 'validation'
  lm_batch_size: int = 32
  teacher_batch_size: int = 64
  lm_seq_len: int = 128
  teacher_seq_len: int = 64
  eval_batch_size: int = 256


@gin.configurable(module='train_lib')
@dataclasses.dataclass(frozen=True)
class MeshConfig:
  """Devices along the mesh axes (data, fsdp, tensor); -1 = the rest."""

  data: int = -1
  fsdp: int = 1
  tensor: int = 1


def build_trainer(model_config: network.ModelConfig, mesh_config: MeshConfig,
                  optimizer_factory: Callable, train_steps: int,
                  teacher_objective: models.TeacherObjective) -> trainer_lib.Trainer:
  """The Trainer for a model, mesh and optimizer."""
  optimizer, schedule = optimizer_factory(total_steps=train_steps)
  mesh = partitioning.create_mesh(mesh_config.data, mesh_config.fsdp, mesh_config.tensor)
  objectives = {'lm': models.LanguageObjective(), 'teacher': teacher_objective}
  return trainer_lib.Trainer(network.FreeLM(model_config), optimizer, schedule,
                             objectives, mesh)


def trained_task_types(mixture: str) -> list[str]:
  """Task types of the teacher tasks in a mixture (or a single task)."""
  import seqio  # pylint: disable=g-import-not-at-top
  provider = seqio.get_mixture_or_task(mixture)
  names = [t.name for t in getattr(provider, 'tasks', [provider])]
  return sorted({tasks.get_teacher_task(n).task_type for n in names})


def check_task_types(model_config: network.ModelConfig, types: Sequence[str]) -> None:
  """The task-aware head must have a label for every registered task type."""
  ids = [tasks.propositions.task_types().index(t) for t in types]
  if ids and max(ids) >= model_config.head_labels[1]:
    raise ValueError(
        f'Task type {types[int(np.argmax(ids))]!r} has id {max(ids)} but the '
        f'task-aware head has {model_config.head_labels[1]} labels; raise '
        f'network.ModelConfig.head_labels.')


def restore_or_init(trainer: trainer_lib.Trainer, manager, seed: int):
  """(state, run_facts) from the newest checkpoint, or a fresh state."""
  if manager.latest_step() is None:
    return trainer.init_state(seed), {}
  state, facts = checkpoints.restore(manager, trainer.abstract_state())
  logging.info('Resumed from step %d in %s', int(state.step), manager.directory)
  return state, facts


def open_streams(data: DataConfig, schedule: str, consumed: dict, seed: int) -> dict:
  """The streams the schedule uses, past the batches already `consumed`.

  Each runs in its own worker process and yields this host's rows.
  """
  shards = dict(shard_index=jax.process_index(), num_shards=jax.process_count())
  per_host = lambda size: _per_host(size, shards['num_shards'])
  specs = {
      'lm': ('lm_batches', data.lm_task, data.lm_seq_len, data.lm_batch_size),
      'teacher': ('teacher_batches', data.teacher_mixture, data.teacher_seq_len,
                  data.teacher_batch_size)}
  used = {'parity': ('lm', 'teacher'), 'lm_only': ('lm',),
          'teacher_only': ('teacher',)}[schedule]
  streams = {}
  for objective in used:
    function, name, seq_len, batch_size = specs[objective]
    streams[objective] = prefetch.ProcessIterator(
        f'freelm_jax.input_pipeline.{function}',
        dict(name=name, seq_len=seq_len, batch_size=per_host(batch_size), seed=seed,
             skip_batches=consumed.get(objective, 0), **shards),
        gin_utils.IMPORTED_MODULES)
  return streams


def _per_host(global_batch_size: int, num_hosts: int) -> int:
  if global_batch_size % num_hosts:
    raise ValueError(f'Batch size {global_batch_size} does not divide over '
                     f'{num_hosts} processes.')
  return global_batch_size // num_hosts


def run_eval(trainer, params, data: DataConfig, step: int, trained: Sequence[str],
             writer: metrics_lib.MetricsWriter) -> list[dict]:
  """Zero-shot evaluation of the held-out tasks, logged as eval rows."""
  score = lambda tokens, lengths: trainer.truth_probability(
      params, *trainer.shard_batch({'t': tokens, 'l': lengths}).values())
  rows = evaluation.evaluate(score, data.eval_tasks, data.eval_split,
                             data.teacher_seq_len, data.eval_batch_size, trained,
                             gin_utils.IMPORTED_MODULES)
  for row in rows:
    writer.write({'step': step, 'kind': 'eval', **row})
  logging.info('Evaluation at step %d:\n%s', step, evaluation.format_table(rows))
  return rows


class _Meter:
  """Per-objective running sums between two log rows."""

  def __init__(self):
    self.reset()

  def reset(self):
    self.sums, self.steps, self.seconds, self.tokens = {}, {}, {}, {}

  def add(self, objective: str, metrics: dict, seconds: Optional[float]):
    sums = self.sums.setdefault(objective, {})
    for k, v in metrics.items():
      sums[k] = sums.get(k, 0.0) + float(v)
    self.steps[objective] = self.steps.get(objective, 0) + 1
    if seconds is not None:  # None for a step that compiled.
      self.seconds[objective] = self.seconds.get(objective, 0.0) + seconds
      self.tokens[objective] = self.tokens.get(objective, 0.0) + float(metrics['num_tokens'])

  def rows(self, step: int) -> list[dict]:
    out = []
    for objective, sums in sorted(self.sums.items()):
      n = self.steps[objective]
      row = {'step': step, 'kind': 'train', 'objective': objective}
      row.update({k: v / n for k, v in sums.items() if k != 'num_tokens'})
      seconds = self.seconds.get(objective, 0.0)
      row['tokens_per_s'] = self.tokens[objective] / seconds if seconds else None
      out.append(row)
    self.reset()
    return out


def _write_config(model_dir: str) -> None:
  if jax.process_index() == 0:
    with open(os.path.join(model_dir, 'config.gin'), 'w') as f:
      f.write(gin.config_str())


@gin.configurable(module='train_lib')
def train(
    *,
    model_dir: str = gin.REQUIRED,
    model_config: network.ModelConfig = gin.REQUIRED,
    data: DataConfig = gin.REQUIRED,
    train_steps: int = gin.REQUIRED,
    optimizer: Callable[..., tuple[optax.GradientTransformation, optax.Schedule]] = gin.REQUIRED,
    objective_schedule: str = 'parity',
    teacher_objective: models.TeacherObjective = models.TeacherObjective(),
    mesh: MeshConfig = MeshConfig(),
    checkpoint_every: int = 500,
    eval_every: int = 0,
    log_every: int = 50,
    seed: int = 0,
) -> list[dict]:
  """Trains FreeLM with both signals; returns the final evaluation rows."""
  trainer_lib.objective_for_step(0, objective_schedule)  # validates the name
  trainer = build_trainer(model_config, mesh, optimizer, train_steps, teacher_objective)
  trained = trained_task_types(data.teacher_mixture)
  check_task_types(model_config, tasks.propositions.task_types())
  os.makedirs(model_dir, exist_ok=True)
  _write_config(model_dir)
  manager = checkpoints.create_manager(model_dir, checkpoint_every)
  writer = metrics_lib.MetricsWriter(model_dir)
  state, facts = restore_or_init(trainer, manager, seed)
  consumed = facts.get('batches') or trainer_lib.objective_counts(
      int(state.step), objective_schedule)
  run_facts = lambda: {'batches': dict(consumed), 'schedule': objective_schedule,
                       'task_types': list(tasks.propositions.task_types()),
                       'trained_task_types': trained}

  def after_step(step: int, state: trainer_lib.TrainState) -> None:
    checkpoints.save(manager, step, state, run_facts())
    if eval_every and step % eval_every == 0 and step < train_steps:
      run_eval(trainer, state.params, data, step, trained, writer)

  streams = open_streams(data, objective_schedule, consumed, seed)
  try:
    state = _loop(trainer, state, streams, objective_schedule, train_steps,
                  consumed, log_every, writer, after_step)
  finally:
    for stream in streams.values():
      stream.close()
  end = int(state.step)
  checkpoints.save(manager, end, state, run_facts(), force=end not in manager.all_steps())
  manager.wait_until_finished()
  rows = run_eval(trainer, state.params, data, end, trained, writer) if data.eval_tasks else []
  writer.close()
  manager.close()
  return rows


def _loop(trainer, state, streams, schedule, train_steps, consumed, log_every,
          writer, after_step) -> trainer_lib.TrainState:
  """Runs the steps from `state.step` to `train_steps`; returns the last state."""
  meter, pending, compiled = _Meter(), None, set()
  last_time = time.perf_counter()
  for step in range(int(state.step), train_steps):
    objective = trainer_lib.objective_for_step(step, schedule)
    batch = trainer.shard_batch(next(streams[objective]))
    state, step_metrics = trainer.train_step(state, batch, objective)
    consumed[objective] = consumed.get(objective, 0) + 1
    if pending:  # read step N-1's metrics only after dispatching step N.
      last_time = _account(meter, pending, last_time, compiled)
    pending = (objective, step_metrics)
    if (step + 1) % log_every == 0 or step + 1 == train_steps:
      last_time = _account(meter, pending, last_time, compiled)
      pending = None
      for row in meter.rows(step + 1):
        writer.write(row)
    after_step(step + 1, state)
  return state


def _account(meter: _Meter, pending, last_time: float, compiled: set) -> float:
  """Fetches a finished step's metrics into the meter; returns the time now."""
  objective, step_metrics = pending
  values = jax.device_get(step_metrics)
  now = time.perf_counter()
  first = objective not in compiled
  compiled.add(objective)
  meter.add(objective, values, None if first else now - last_time)
  return now
