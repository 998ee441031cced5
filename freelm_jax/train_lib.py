"""The training loop: it only orchestrates data, steps, logging, checkpoints.

Step numbers count updates from 0; a `schedules.Schedule` picks each step's
objective (with 'parity', step 0 trains on language, step 1 on the teacher
signal, and so on). Re-running on the same model_dir resumes from the newest
checkpoint; each stream then continues after the batches it already consumed,
from its newest iterator snapshot (the pipelines are seeded, so the resumed run
sees the batches an uninterrupted run would). SIGTERM saves the current step and returns; a non-finite step stops
the run before it is checkpointed (or is skipped, with `skip_nonfinite`).
"""

import contextlib
import dataclasses
import inspect
import math
import os
import sys
import time
from typing import Any, Callable, Collection, Optional, Sequence, Union

from absl import logging
import gin
import jax
import numpy as np
import optax

from freelm_jax import checkpoints
from freelm_jax import console
from freelm_jax import errors
from freelm_jax import gin_utils
from freelm_jax import interop
from freelm_jax import models
from freelm_jax import network
from freelm_jax import partitioning
from freelm_jax import prefetch
from freelm_jax import schedules
from freelm_jax import storage
from freelm_jax import trainer as trainer_lib
# `tasks`, `evaluation` and `metrics` import TensorFlow: they are imported where
# used, so that `plan.py` reads this module's gin configurables without it.
# pylint: disable=g-import-not-at-top

# Gin-configured constructors (the library modules themselves know no gin).
ModelConfig = gin.external_configurable(network.ModelConfig, module='network')
TeacherObjective = gin.external_configurable(models.TeacherObjective, module='models')
LanguageObjective = gin.external_configurable(models.LanguageObjective, module='models')
create_optimizer = gin.external_configurable(trainer_lib.create_optimizer, module='trainer')
for _schedule in (*schedules.BUILT_IN, schedules.Cycle):
  gin.external_configurable(_schedule, module='schedules')


# [sep] and [cls], and at least one token each of the instance and the
# proposition; `check_tasks` also requires room for a task's shortest proposition.
MIN_TEACHER_SEQ_LEN = 4


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
  eval_max_examples: Optional[int] = None  # score only each task's first N examples
  lm_eval_batches: int = 64  # held-out LM batches per evaluation (0 = none)
  eval_probe: bool = False  # also report a bag-of-words probe's accuracy

  def __post_init__(self):
    for name in ('lm_batch_size', 'teacher_batch_size', 'eval_batch_size'):
      errors.check_count(DataConfig, name, getattr(self, name), 1)
    errors.check_count(DataConfig, 'lm_seq_len', self.lm_seq_len, 2,
                       ' (a token and the next one to predict)')
    errors.check_count(DataConfig, 'teacher_seq_len', self.teacher_seq_len,
                       MIN_TEACHER_SEQ_LEN, ' ([sep], [cls] and a token each of the '
                       'instance and the proposition)')
    errors.check_count(DataConfig, 'lm_eval_batches', self.lm_eval_batches, 0)
    if self.eval_max_examples is not None:
      errors.check_count(DataConfig, 'eval_max_examples', self.eval_max_examples, 1,
                         ' (None: every example)')


@gin.configurable(module='train_lib')
@dataclasses.dataclass(frozen=True)
class MeshConfig:
  """Devices along the mesh axes (data, fsdp, tensor); -1 = the rest."""

  data: int = -1
  fsdp: int = 1
  tensor: int = 1

  def __post_init__(self):
    axes = ('data', 'fsdp', 'tensor')
    for name in axes:
      value = getattr(self, name)
      errors.check(isinstance(value, int) and (value == -1 or value >= 1), MeshConfig,
                   name, value, 'must be -1 (the remaining devices) or at least 1.')
    rest = [name for name in axes if getattr(self, name) == -1]
    if len(rest) > 1:
      raise errors.SettingError(
          MeshConfig, rest[1], -1, 'only one mesh size may be -1 (the remaining '
          'devices), and {other} is.', {'other': (MeshConfig, rest[0], -1)})


def build_trainer(model_config: network.ModelConfig, mesh_config: MeshConfig,
                  optimizer_factory: Callable, train_steps: int,
                  teacher_objective: models.TeacherObjective,
                  skip_nonfinite: bool = False,
                  extra_objectives: Sequence[models.Objective] = ()) -> trainer_lib.Trainer:
  """The Trainer for a model, mesh and optimizer; its objectives are 'lm',
  'teacher' and `extra_objectives`, each under its `name`."""
  optimizer, schedule = optimizer_factory(total_steps=train_steps)
  mesh = partitioning.create_mesh(mesh_config.data, mesh_config.fsdp, mesh_config.tensor)
  objectives = {o.name: o for o in (LanguageObjective(), teacher_objective,
                                    *extra_objectives)}
  return trainer_lib.Trainer(network.FreeLM(model_config), optimizer, schedule,
                             objectives, mesh, skip_nonfinite=skip_nonfinite)


def trainer_without_data(gin_files: Sequence[str], bindings: Sequence[str],
                         train_steps: int = 1) -> tuple:
  """(model_config, data_config, trainer, schedule) from gin files, with no
  data layer: the objectives and schedule are those bound to `train`.

  gin's `import tasks` is skipped (it would import TensorFlow), so `plan` and
  `bench` run where only JAX is installed; the batch sizes are checked.
  INIT_FROM may stay `%gin.REQUIRED` (gin/paper.gin): no weights are loaded here.
  """
  sys.modules['tasks'] = None  # gin's `import tasks` fails, and is skipped.
  gin_utils.parse(gin_files, bindings, skip_failed_imports=True, unread_macros=('INIT_FROM',))
  model_config, data = ModelConfig(), DataConfig()
  schedule = schedules.get(_bound_to_train('objective_schedule'))
  trainer = build_trainer(
      model_config, MeshConfig(), create_optimizer, train_steps,
      _bound_to_train('teacher_objective'),
      extra_objectives=_bound_to_train('extra_objectives'))
  check_fit(data, trainer, schedule)
  return model_config, data, trainer, schedule


def _bound_to_train(name: str) -> Any:
  """The value gin binds to `train`'s argument `name`, else its default."""
  bound = gin.get_bindings(train)
  return bound[name] if name in bound else inspect.signature(train).parameters[name].default


def teacher_task_names(mixture: str) -> list[str]:
  """The teacher tasks of a mixture (or a single task)."""
  import tasks  # lazy: keeps TensorFlow out of plan.py's and bench.py's imports
  provider = tasks.get_task_or_mixture(mixture)
  return [t.name for t in getattr(provider, 'tasks', [provider])]


def trained_task_types(mixture: str) -> list[str]:
  """Task types of the teacher tasks in a mixture (or a single task)."""
  import tasks  # lazy: keeps TensorFlow out of plan.py's and bench.py's imports
  return sorted({tasks.get_teacher_task(n).task_type for n in teacher_task_names(mixture)})


def run_task_types(data: DataConfig) -> set[str]:
  """Task types of the teacher mixture's tasks and of the eval tasks."""
  import tasks  # lazy: keeps TensorFlow out of plan.py's and bench.py's imports
  return set(trained_task_types(data.teacher_mixture)) | {
      tasks.get_teacher_task(name).task_type for name in data.eval_tasks}


def task_type_order(in_run: Collection[str],
                    recorded: Optional[Sequence[str]] = None) -> list[str]:
  """Task-type ids: a checkpoint's `recorded` order, then the run's other types
  (`in_run`) in registration order. Types registered but not used by the run
  (e.g. by other tasks imported in the same process) get no id here."""
  import tasks  # lazy: keeps TensorFlow out of plan.py's and bench.py's imports
  order = list(recorded or [])
  return order + [t for t in tasks.propositions.task_types()
                  if t in in_run and t not in order]


def check_task_types(model_config: network.ModelConfig, types: Sequence[str]) -> None:
  """The task-aware head must have a label for every task type (`types` in id order)."""
  if len(types) > model_config.head_labels[1]:
    raise errors.ConfigError(
        f'Task type {types[-1]!r} has id {len(types) - 1} but the '
        f'task-aware head has {model_config.head_labels[1]} labels; raise '
        f'network.ModelConfig.head_labels.')


def restore_or_init(trainer: trainer_lib.Trainer, manager, seed: int,
                    init_from: Optional[str] = None):
  """(state, run_facts) from the newest checkpoint, or a fresh state.

  A fresh state takes its weights from `init_from` when given (any directory
  `interop.load` reads: GPT-2, FreeLM or a model_dir; see `param_fitting.fit_params`).
  """
  restored = checkpoints.restore_newest(manager, trainer.abstract_state(),
                                       os.path.dirname(str(manager.directory)))
  if restored is None:
    state = trainer.init_state(seed)
    if init_from:
      state = state.replace(params=_params_from(init_from, trainer, state.params))
    return state, {}
  state, facts = restored
  logging.info('Resumed from step %d in %s', int(state.step), manager.directory)
  return state, facts


def _params_from(path: str, trainer: trainer_lib.Trainer, params):
  """The checkpoint's weights fitted to `params`, in `params`' shardings."""
  fitted = interop.init_from(path, jax.device_get(params), trainer.module.config)
  return jax.tree.map(
      lambda x, old: jax.make_array_from_callback(x.shape, old.sharding, lambda i: x[i]),
      fitted, params)


def open_streams(data: DataConfig, schedule: schedules.Schedule, consumed: dict,
                 seed: int, trainer: trainer_lib.Trainer,
                 task_types: Optional[Sequence[str]] = None,
                 state_dir: Optional[str] = None, snapshot_steps: int = 0) -> dict:
  """The streams the schedule's objectives read, past the batches already
  `consumed` (stream -> batches).

  With `state_dir`, each worker snapshots its iterator there as often as
  every `snapshot_steps` steps feed it (`input_pipeline.IteratorSnapshots`).

  Each runs in its own worker process and yields this host's rows: input
  shard `trainer.data_shard` = (index, count) of the seqio datasets. A worker
  rebuilds the tasks from `gin_utils.worker_setup()` and takes the teacher's
  task-type ids (`task_types`, decided here) from its arguments.
  """
  index, num_shards = trainer.data_shard
  specs = {
      'lm': ('lm_batches', data.lm_task, data.lm_seq_len, data.lm_batch_size),
      'teacher': ('teacher_batches', data.teacher_mixture, data.teacher_seq_len,
                  data.teacher_batch_size)}
  streams, setup = {}, gin_utils.worker_setup()
  for stream, every in trainer.stream_counts(schedule, snapshot_steps).items():
    function, name, seq_len, batch_size = specs[stream]
    snapshots = dict(
        state_dir=os.path.join(state_dir, f'{stream}.process{jax.process_index()}'),
        snapshot_every=every, keep_snapshots=5 + 10 // max(every, 1)) if state_dir else {}
    streams[stream] = prefetch.ProcessIterator(
        f'freelm_jax.input_pipeline.{function}',
        dict(name=name, seq_len=seq_len, batch_size=_per_host(batch_size, num_shards),
             seed=seed, skip_batches=consumed.get(stream, 0), shard_index=index,
             num_shards=num_shards, **snapshots,
             **({'task_types': list(task_types)} if task_types and stream == 'teacher'
                else {})),
        setup)
  return streams


def _per_host(global_batch_size: int, num_hosts: int) -> int:
  if global_batch_size % num_hosts:
    raise errors.ConfigError(f'Batch size {global_batch_size} does not divide over '
                             f'{num_hosts} processes.')
  return global_batch_size // num_hosts


def check_run(train_steps: int, checkpoint_every: int, eval_every: int,
              log_every: int) -> None:
  """Raises SettingError for the first of `train`'s own settings out of range."""
  errors.check_count(train, 'train_steps', train_steps, 1)
  errors.check_count(train, 'checkpoint_every', checkpoint_every, 1,
                     ' (the last step is always saved)')
  errors.check_count(train, 'eval_every', eval_every, 0, ' (0: only the final evaluation)')
  errors.check_count(train, 'log_every', log_every, 1)


def check_fit(data: DataConfig, trainer: trainer_lib.Trainer,
              schedule: schedules.Schedule) -> None:
  """The trainer has the schedule's objectives, and the data fits the model
  (`check_lengths`) and the mesh (`check_batch_sizes`)."""
  trainer.check_schedule(schedule)
  check_lengths(data, trainer.module.config, trainer.objectives.values())
  check_batch_sizes(data, trainer.mesh)


def check_lengths(data: DataConfig, model_config: network.ModelConfig,
                  objectives: Collection[models.Objective] = ()) -> None:
  """Both sequence lengths fit the model's context (a position past it has no
  embedding), and the LM objective's logits chunk divides its length."""
  for name in ('lm_seq_len', 'teacher_seq_len'):
    errors.check(getattr(data, name) <= model_config.max_len, DataConfig, name,
                 getattr(data, name), "must be at most the model's context, {max_len}.",
                 max_len=(network.ModelConfig, 'max_len', model_config.max_len))
  for objective in objectives:
    chunk = getattr(objective, 'logits_chunk', 0)
    if isinstance(objective, models.LanguageObjective) and 0 < chunk < data.lm_seq_len:
      errors.check(data.lm_seq_len % chunk == 0, models.LanguageObjective, 'logits_chunk',
                   chunk, 'must divide {lm_seq_len}.',
                   lm_seq_len=(DataConfig, 'lm_seq_len', data.lm_seq_len))


def check_tasks(data: DataConfig) -> None:
  """Every task the data names is registered, and TEACHER_SEQ_LEN leaves room
  for some of the instance beside each teacher task's shortest proposition
  (else the instance is cut away: `tasks.propositions`)."""
  import seqio  # lazy: keeps TensorFlow out of plan.py's and bench.py's imports
  import tasks
  names = set(seqio.TaskRegistry.names()) | set(seqio.MixtureRegistry.names())
  for name in ('lm_task', 'teacher_mixture'):
    errors.check(getattr(data, name) in names, DataConfig, name, getattr(data, name),
                 'no task or mixture of that name is registered.')
  teacher = set(tasks.registered_teacher_tasks())
  for task in data.eval_tasks:
    errors.check(task in teacher, DataConfig, 'eval_tasks', tuple(data.eval_tasks),
                 f'{task!r} is not a registered teacher task.')
  for task in dict.fromkeys(teacher_task_names(data.teacher_mixture) + list(data.eval_tasks)):
    shortest = tasks.propositions.shortest_proposition(task)
    errors.check(
        data.teacher_seq_len >= shortest + 3, DataConfig, 'teacher_seq_len',
        data.teacher_seq_len, f'must be at least {shortest + 3}: [sep], [cls], the '
        f"shortest proposition of task {task!r} ({shortest} tokens) and a token of "
        'the instance.')


def check_batch_sizes(data: DataConfig, mesh) -> None:
  """Every global batch must split evenly over the data-parallel axes."""
  for name, size in (('LM_BATCH_SIZE', data.lm_batch_size),
                     ('TEACHER_BATCH_SIZE', data.teacher_batch_size),
                     ('train_lib.DataConfig.eval_batch_size', data.eval_batch_size)):
    partitioning.check_batch_size(name, size, mesh)


def run_eval(trainer, params, data: DataConfig, step: int, trained: Sequence[str],
             writer, task_types: Optional[Sequence[str]] = None) -> list[dict]:
  """Held-out language loss, then zero-shot evaluation of the held-out tasks,
  logged as eval rows.

  Multi-host: every process reads every eval batch, feeds its own rows and
  gets all the results back, so every process computes the same table.
  """
  with gin.unlock_config():  # evaluation registers gin configurables (`evaluate`).
    from freelm_jax import evaluation  # lazy: it imports TensorFlow
  lm_row = run_lm_eval(trainer, params, data)
  rows = [lm_row] if lm_row else []
  score = lambda tokens, lengths: trainer.score(params, tokens, lengths)
  if data.eval_tasks:
    rows += evaluation.evaluate(score, data.eval_tasks, data.eval_split,
                                data.teacher_seq_len, data.eval_batch_size, trained,
                                gin_utils.worker_setup(), task_types=task_types,
                                max_examples=data.eval_max_examples,
                                trained_tasks=teacher_task_names(data.teacher_mixture),
                                probe=data.eval_probe)
  for row in rows:
    writer.write({'step': step, 'kind': 'eval', **row})
  logging.info('Evaluation at step %d:\n%s', step, evaluation.format_table(rows))
  return rows


def run_lm_eval(trainer, params, data: DataConfig) -> Optional[dict]:
  """The eval row of the language task's `eval_split` (its first
  `lm_eval_batches` batches): lm_loss (per token), perplexity, num_tokens.
  None when `lm_eval_batches` is 0 or the task has no such split."""
  if not data.lm_eval_batches:
    return None
  # lazy: it imports TensorFlow. In this process: a worker takes ~10 s to start.
  from freelm_jax import input_pipeline
  loss_sum = tokens = 0.0
  for batch in input_pipeline.lm_eval_batches(
      data.lm_task, data.lm_seq_len, data.lm_batch_size, data.eval_split,
      data.lm_eval_batches):
    loss, count = trainer.eval_loss(params, batch, 'lm')
    loss_sum, tokens = loss_sum + loss * count, tokens + count
  if not tokens:
    logging.info('No %r split of %s: no held-out LM loss.', data.eval_split, data.lm_task)
    return None
  loss = loss_sum / tokens
  return {'task': data.lm_task, 'split': data.eval_split, 'lm_loss': loss,
          'perplexity': math.exp(loss) if loss < 700 else math.inf,
          'num_tokens': int(tokens)}


class _Meter:
  """Per-objective running sums between two log rows."""

  def __init__(self):
    self.reset()

  def reset(self):
    self.sums, self.steps, self.seconds, self.tokens = {}, {}, {}, {}
    self.skipped = {}

  def skip(self, objective: str):
    """Counts a step whose update was skipped (non-finite)."""
    self.skipped[objective] = self.skipped.get(objective, 0) + 1

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
    for objective in sorted(set(self.sums) | set(self.skipped)):
      sums, n = self.sums.get(objective, {}), self.steps.get(objective, 0)
      row = {'step': step, 'kind': 'train', 'objective': objective}
      row.update({k: v / n for k, v in sums.items() if k != 'num_tokens'})
      seconds = self.seconds.get(objective, 0.0)
      row['tokens_per_s'] = self.tokens[objective] / seconds if seconds else None
      if objective in self.skipped:
        row['skipped_steps'] = self.skipped[objective]
      out.append(row)
    self.reset()
    return out


def _write_config(model_dir: str) -> None:
  if jax.process_index() == 0:
    (storage.resolve(model_dir) / 'config.gin').write_text(gin.config_str())


@gin.configurable(module='train_lib')
def train(
    *,
    model_dir: str = gin.REQUIRED,
    model_config: network.ModelConfig = gin.REQUIRED,
    data: DataConfig = gin.REQUIRED,
    train_steps: int = gin.REQUIRED,
    optimizer: Callable[..., tuple[optax.GradientTransformation, optax.Schedule]] = gin.REQUIRED,
    objective_schedule: Union[str, schedules.Schedule] = 'parity',
    teacher_objective: models.TeacherObjective = models.TeacherObjective(),
    extra_objectives: Sequence[models.Objective] = (),
    mesh: MeshConfig = MeshConfig(),
    checkpoint_every: int = 500,
    eval_every: int = 0,
    log_every: int = 50,
    seed: int = 0,
    init_from: Optional[str] = None,
    skip_nonfinite: bool = False,
) -> list[dict]:
  """Trains FreeLM on its schedule's objectives; returns the final evaluation rows.

  `objective_schedule` (gin `OBJECTIVE_SCHEDULE`): a schedule's name or a
  `schedules.Schedule`; `extra_objectives`: objectives beside 'lm' and
  'teacher' (each under its `name`) for the schedule to use.
  `init_from` (gin `INIT_FROM`): weights for a model_dir with no checkpoint yet.
  `skip_nonfinite`: skip (do not apply) updates with a non-finite loss, gradient
  or parameters and count them as `skipped_steps`, instead of stopping the run.
  On SIGTERM the run saves a checkpoint at the current step and returns [].
  """
  check_run(train_steps, checkpoint_every, eval_every, log_every)
  schedule = schedules.get(objective_schedule)
  trainer = build_trainer(model_config, mesh, optimizer, train_steps, teacher_objective,
                          skip_nonfinite, extra_objectives)
  check_fit(data, trainer, schedule)
  check_tasks(data)  # registers the tasks (`import tasks`)
  in_run = run_task_types(data)
  check_task_types(model_config, task_type_order(in_run))
  hint = partitioning.unused_accelerator_hint(jax.default_backend())
  if hint:
    logging.warning(hint)
  checkpoints.check_writable(model_dir)
  with _Run(trainer, schedule, data, model_dir, train_steps, eval_every) as run:
    state, facts = run.restore(checkpoint_every, seed, init_from)
    finished = finished_evaluation(model_dir, int(state.step), train_steps)
    if finished:
      return finished
    run.begin(int(state.step), facts, in_run)
    state, preempted = run.steps(state, seed, log_every, checkpoint_every)
    rows = [] if preempted else run.evaluate(int(state.step), state.params)
  if preempted:
    logging.warning('Preempted: saved the checkpoint at step %d; re-run the same '
                    'command to resume.', int(state.step))
  return rows


class _Run:
  """One run's checkpoint manager, metrics writer and input workers (closed
  when the run ends, however it ends) and the bookkeeping its steps share."""

  def __init__(self, trainer: trainer_lib.Trainer, schedule: schedules.Schedule,
               data: DataConfig, model_dir: str, train_steps: int, eval_every: int):
    self.trainer, self.schedule, self.data = trainer, schedule, data
    self.model_dir, self.train_steps, self.eval_every = model_dir, train_steps, eval_every
    self._resources = contextlib.ExitStack()
    self.manager = self.progress = None
    self.consumed, self.task_types, self.trained = {}, [], []

  def __enter__(self) -> '_Run':
    return self

  def __exit__(self, error_type, *_) -> None:
    if error_type is None:
      self._resources.close()
      return
    with contextlib.suppress(Exception):  # the error raised is the one to report.
      self._resources.close()

  def restore(self, checkpoint_every: int, seed: int, init_from: Optional[str]):
    """Opens the manager and the log file; (state, run facts) as `restore_or_init`."""
    self.manager = self._resources.enter_context(contextlib.closing(
        checkpoints.create_manager(self.model_dir, checkpoint_every)))
    _log_file(self.model_dir)  # before restoring: the resume line reaches it.
    return restore_or_init(self.trainer, self.manager, seed, init_from)

  def begin(self, step: int, facts: dict, in_run: Collection[str]) -> None:
    """Writes the config, opens the metrics writer and progress display, and
    takes the task-type ids and batches consumed from the checkpoint's facts."""
    from freelm_jax import metrics as metrics_lib  # lazy: clu imports TensorFlow
    _write_config(self.model_dir)
    writer = self._resources.enter_context(contextlib.closing(
        metrics_lib.MetricsWriter(self.model_dir)))
    self.progress = self._resources.enter_context(console.Progress(
        writer, self.train_steps, step, jax.process_index() == 0))
    self.task_types = task_type_order(in_run, facts.get('task_types'))  # the checkpoint's ids
    check_task_types(self.trainer.module.config, self.task_types)
    self.trained = trained_task_types(self.data.teacher_mixture)
    self.consumed = facts.get('batches') or self.trainer.stream_counts(self.schedule, step)

  def facts(self) -> dict:
    """What a checkpoint records beside the state."""
    return {'batches': dict(self.consumed),
            'schedule': self.schedule.name or type(self.schedule).__name__,
            'task_types': self.task_types, 'trained_task_types': self.trained}

  def evaluate(self, step: int, params) -> list[dict]:
    return self.progress.evaluation(lambda: run_eval(
        self.trainer, params, self.data, step, self.trained, self.progress,
        self.task_types))

  def after_step(self, step: int, state: trainer_lib.TrainState) -> None:
    checkpoints.save(self.manager, step, state, self.facts())
    self.progress.step(step)
    if self.eval_every and step % self.eval_every == 0 and step < self.train_steps:
      self.evaluate(step, state.params)

  def steps(self, state, seed: int, log_every: int,
            checkpoint_every: int) -> tuple[trainer_lib.TrainState, bool]:
    """Trains to `train_steps` and saves; (state, whether it was preempted)."""
    streams = open_streams(self.data, self.schedule, self.consumed, seed, self.trainer,
                           self.task_types, os.path.join(self.model_dir, 'iterators'),
                           checkpoint_every)
    try:
      with checkpoints.Preemption(self.manager) as preemption:
        state, preempted = _loop(self.trainer, state, streams, self.schedule,
                                 self.train_steps, self.consumed, log_every, self.progress,
                                 self.after_step, self.manager.should_save, preemption)
        checkpoints.save(self.manager, int(state.step), state, self.facts(), force=True)
        checkpoints.finish(self.manager)
    except BaseException:
      with contextlib.suppress(Exception):  # the error raised is the one to report.
        self.manager.wait_until_finished()  # lets a save in flight commit.
      raise
    finally:
      for stream in streams.values():
        stream.close()
    return state, preempted


def finished_evaluation(model_dir: str, step: int, train_steps: int) -> list[dict]:
  """The final evaluation of a run already at `train_steps` (announced on
  stdout), or [] if it has steps or that evaluation left."""
  from freelm_jax import metrics as metrics_lib  # lazy: clu imports TensorFlow
  if step < train_steps:
    return []
  try:
    rows = metrics_lib.read(model_dir)
  except FileNotFoundError:
    return []
  rows = [r for r in rows if r['kind'] == 'eval' and r['step'] == step]
  if rows and jax.process_index() == 0:
    print(f'{model_dir} is complete: step {step} of TRAIN_STEPS = {train_steps}. Its final '
          'evaluation follows; raise TRAIN_STEPS to train on.', flush=True)
  return rows


def _log_file(model_dir: str) -> None:
  """Every log line of this process to model_dir/train.log (local model_dirs)."""
  if not storage.is_remote(model_dir):
    suffix = f'.process{jax.process_index()}' if jax.process_count() > 1 else ''
    console.log_to_file(os.path.join(model_dir, f'train{suffix}.log'))


def _loop(trainer, state, streams, schedule, train_steps, consumed, log_every,
          writer, after_step, checkpoint_due=lambda step: False,
          preemption=None) -> tuple[trainer_lib.TrainState, bool]:
  """Runs the steps from `state.step` to `train_steps`, each on the objective
  `schedule` picks; `consumed` counts the batches read from each stream.

  Returns (the last state, whether it stopped early for a preemption). A step's
  metrics are checked for non-finite values before its state is checkpointed.
  """
  meter, pending, compiled = _Meter(), None, set()
  last_time = time.perf_counter()
  account = lambda pending, last_time: _account(
      meter, pending, last_time, compiled, trainer.skip_nonfinite)
  for step in range(int(state.step), train_steps):
    objective = schedule.objective(step)
    stream = trainer.objectives[objective].stream
    batch = trainer.shard_batch(next(streams[stream]))
    state, step_metrics = trainer.train_step(state, batch, objective)
    consumed[stream] = consumed.get(stream, 0) + 1
    if pending:  # read step N-1's metrics only after dispatching step N.
      last_time = account(pending, last_time)
    pending = (step + 1, objective, step_metrics)
    stop = preemption is not None and preemption.reached(step + 1)
    log = (step + 1) % log_every == 0 or step + 1 == train_steps or stop
    if log or checkpoint_due(step + 1):
      last_time = account(pending, last_time)
      pending = None
    if log:
      for row in meter.rows(step + 1):
        writer.write(row)
    if stop:
      return state, True
    after_step(step + 1, state)
  return state, False


def _account(meter: _Meter, pending, last_time: float, compiled: set,
             skip_nonfinite: bool = False) -> float:
  """Fetches a finished step's metrics into the meter; returns the time now.

  A non-finite step raises NonFiniteError, or is counted as skipped.
  """
  step, objective, step_metrics = pending
  values = dict(jax.device_get(step_metrics))
  now = time.perf_counter()
  first = objective not in compiled
  compiled.add(objective)
  if values.pop('nonfinite', 0.0):
    if not skip_nonfinite:
      raise _nonfinite_error(step, objective, values)
    meter.skip(objective)
    return now
  meter.add(objective, values, None if first else now - last_time)
  return now


def _nonfinite_error(step: int, objective: str, values: dict) -> Exception:
  what = next((k for k in ('loss', 'grad_norm') if not np.isfinite(values[k])),
              'parameters after the update')
  return trainer_lib.NonFiniteError(
      f'non-finite {what} at step {step} ({objective} objective; loss '
      f'{float(values["loss"]):.4g}, grad_norm {float(values["grad_norm"]):.4g}); stopped '
      f'before checkpointing it. Lower LEARNING_RATE, or set '
      f'train_lib.train.skip_nonfinite = True to skip such steps.')
