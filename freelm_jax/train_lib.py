"""A training run set up from gin: its settings, trainer, tasks, checkpoints,
input workers and evaluation, handed to `loop.train`.

Step numbers count updates from 0; a `schedules.Schedule` picks each step's
objective (with 'parity', step 0 trains on language, step 1 on the teacher
signal, and so on). Re-running on the same model_dir resumes from the newest
checkpoint; each stream then continues after the batches it already consumed,
from its newest iterator snapshot (the pipelines are seeded, so the resumed run
sees the batches an uninterrupted run would), and a run whose final evaluation
was interrupted runs it. SIGTERM saves the current step and returns; a
non-finite step stops the run before it is checkpointed (or is skipped, with
`skip_nonfinite`).
"""

import contextlib
import dataclasses
import inspect
import os
import sys
from typing import Any, Callable, Collection, Iterator, Optional, Sequence, Union

from absl import logging
import gin
import jax
import optax

from freelm_jax import checkpoints
from freelm_jax import console
from freelm_jax import errors
from freelm_jax import gin_utils
from freelm_jax import input_streams
from freelm_jax import interop
from freelm_jax import loop
from freelm_jax import models
from freelm_jax import network
from freelm_jax import partitioning
from freelm_jax import run_tasks
from freelm_jax import schedules
from freelm_jax import storage
from freelm_jax import trainer as trainer_lib
# `tasks`, `evaluation` and `metrics` import TensorFlow: they are imported where
# used (`run_tasks` too), so that `plan.py` reads this module's gin
# configurables without it.
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


def check_batch_sizes(data: DataConfig, mesh) -> None:
  """Every global batch must split evenly over the data-parallel axes."""
  for name, size in (('LM_BATCH_SIZE', data.lm_batch_size),
                     ('TEACHER_BATCH_SIZE', data.teacher_batch_size),
                     ('train_lib.DataConfig.eval_batch_size', data.eval_batch_size)):
    partitioning.check_batch_size(name, size, mesh)


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
  On SIGTERM the run saves a checkpoint at the current step and returns []
  (`loop.train`).
  """
  check_run(train_steps, checkpoint_every, eval_every, log_every)
  schedule = schedules.get(objective_schedule)
  trainer = build_trainer(model_config, mesh, optimizer, train_steps, teacher_objective,
                          skip_nonfinite, extra_objectives)
  in_run = check_setup(data, trainer, schedule)
  checkpoints.check_writable(model_dir)
  with _Resources(model_dir) as resources:
    state, facts = resources.restore(trainer, checkpoint_every, seed, init_from)
    step = int(state.step)
    finished = finished_evaluation(model_dir, step, train_steps)
    if finished:
      return finished
    display = resources.display(train_steps, step)
    run = run_state(trainer, schedule, data, step, facts, in_run)
    streams = {} if step >= train_steps else resources.streams(input_streams.open_streams(
        data, schedule, run.consumed, seed, trainer, run.task_types,
        os.path.join(model_dir, 'iterators'), checkpoint_every, train_steps))
    with resources.preemption() as stop:
      outcome = loop.train(
          trainer, state, run, streams, schedule, train_steps=train_steps,
          log_every=log_every, eval_every=eval_every, display=display,
          checkpointer=checkpoints.Checkpointer(resources.manager),
          evaluate=_evaluator(trainer, data, run, display), stop=stop)
  return outcome.rows


def check_setup(data: DataConfig, trainer: trainer_lib.Trainer,
                schedule: schedules.Schedule) -> set[str]:
  """Checks the data, the tasks and the device use before a run starts; returns
  the run's task types (registering its tasks: `import tasks`)."""
  check_fit(data, trainer, schedule)
  run_tasks.check_tasks(data)
  in_run = run_tasks.run_task_types(data.teacher_mixture, data.eval_tasks)
  run_tasks.check_task_types(trainer.module.config, run_tasks.task_type_order(in_run))
  hint = partitioning.unused_accelerator_hint(jax.default_backend())
  if hint:
    logging.warning(hint)
  return in_run


def run_state(trainer: trainer_lib.Trainer, schedule: schedules.Schedule, data: DataConfig,
              step: int, facts: dict, in_run: Collection[str]) -> loop.RunState:
  """The run's facts: its checkpoint's (`facts`), else those of a new run at `step`.

  The task-type ids keep the checkpoint's order; the batches consumed are the
  checkpoint's, else what the schedule's first `step` steps read.
  """
  task_types = run_tasks.task_type_order(in_run, facts.get('task_types'))
  run_tasks.check_task_types(trainer.module.config, task_types)
  return loop.RunState(
      consumed=facts.get('batches') or trainer.stream_counts(schedule, step),
      schedule=schedule.name or type(schedule).__name__, task_types=task_types,
      trained_task_types=run_tasks.trained_task_types(data.teacher_mixture))


def _evaluator(trainer: trainer_lib.Trainer, data: DataConfig, run: loop.RunState,
               display: console.Progress) -> loop.Evaluate:
  """The loop's evaluation: `evaluation.run_eval`, shown on the progress bar."""
  with gin.unlock_config():  # evaluation registers gin configurables (`evaluate`).
    from freelm_jax import evaluation  # lazy: it imports TensorFlow

  def evaluate(step: int, params, stop: Callable[[], bool]) -> list[dict]:
    return display.evaluation(lambda: evaluation.run_eval(
        trainer, params, data, step, run.trained_task_types, display, run.task_types,
        stop))

  return evaluate


class _Resources(contextlib.ExitStack):
  """One run's checkpoint manager, log file, metrics writer, progress bar and
  input workers, closed when the run ends, however it ends."""

  def __init__(self, model_dir: str):
    super().__init__()
    self.model_dir = model_dir
    self.manager = None

  def __exit__(self, error_type, *rest) -> bool:
    if error_type is None:
      return super().__exit__(error_type, *rest)
    with contextlib.suppress(Exception):  # the error raised is the one to report.
      self.close()
    return False

  def restore(self, trainer: trainer_lib.Trainer, checkpoint_every: int, seed: int,
              init_from: Optional[str]):
    """Opens the manager and the log file; (state, run facts) as `restore_or_init`."""
    self.manager = self.enter_context(contextlib.closing(
        checkpoints.create_manager(self.model_dir, checkpoint_every)))
    _log_file(self.model_dir)  # before restoring: the resume line reaches it.
    return restore_or_init(trainer, self.manager, seed, init_from)

  def display(self, train_steps: int, step: int) -> console.Progress:
    """Writes the config; opens the metrics writer and the progress bar over it."""
    from freelm_jax import metrics as metrics_lib  # lazy: clu imports TensorFlow
    if jax.process_index() == 0:
      (storage.resolve(self.model_dir) / 'config.gin').write_text(gin.config_str())
    writer = self.enter_context(contextlib.closing(
        metrics_lib.MetricsWriter(self.model_dir)))
    return self.enter_context(console.Progress(
        writer, train_steps, step, jax.process_index() == 0))

  def streams(self, streams: dict) -> dict:
    """`streams`, each closed with the run (`loop.train` closes them sooner)."""
    for stream in streams.values():
      self.callback(stream.close)
    return streams

  @contextlib.contextmanager
  def preemption(self) -> Iterator[checkpoints.Preemption]:
    """SIGTERM asks the loop to stop; on an error, a save in flight commits first."""
    try:
      with checkpoints.Preemption(self.manager) as preemption:
        yield preemption
    except BaseException:
      with contextlib.suppress(Exception):  # the error raised is the one to report.
        self.manager.wait_until_finished()
      raise


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
