"""One training run from its trainer to its final evaluation: checkpoints
restored (or weights from INIT_FROM), the input workers started, `loop.train`
run, the run's resources closed however it ends.

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
import os
from typing import Callable, Collection, Iterator, Optional

from absl import logging
import gin
import jax

from freelm_jax.common import console
from freelm_jax.common import metrics_files
from freelm_jax.common import storage
from freelm_jax.config import settings
from freelm_jax.core import checkpoints
from freelm_jax.core import partitioning
from freelm_jax.core import schedules
from freelm_jax.core import trainer as trainer_lib
from freelm_jax.interop import weights
from freelm_jax.training import evaluation
from freelm_jax.training import input_streams
from freelm_jax.training import loop
from freelm_jax.training import metrics as metrics_lib
from freelm_jax.training import run_tasks


def run(trainer: trainer_lib.Trainer, schedule: schedules.Schedule,
        data: settings.DataConfig, model_dir: str, *, train_steps: int,
        checkpoint_every: int, eval_every: int, log_every: int, seed: int,
        init_from: Optional[str]) -> list[dict]:
  """Runs `trainer` on `schedule` to `train_steps` in `model_dir` (resuming
  there); returns the final evaluation rows, [] when stopped by SIGTERM."""
  in_run = check_setup(data, trainer, schedule)
  checkpoints.check_writable(model_dir)
  with _Resources(model_dir) as resources:
    state, facts = resources.restore(trainer, checkpoint_every, seed, init_from)
    step = int(state.step)
    finished = finished_evaluation(model_dir, step, train_steps)
    if finished:
      return finished
    display = resources.display(train_steps, step)
    run_facts = run_state(trainer, schedule, data, step, facts, in_run)
    streams = {} if step >= train_steps else resources.streams(input_streams.open_streams(
        data, schedule, run_facts.consumed, seed, trainer, run_facts.task_types,
        os.path.join(model_dir, 'iterators'), checkpoint_every, train_steps))
    with resources.preemption() as stop:
      outcome = loop.train(
          trainer, state, run_facts, streams, schedule, train_steps=train_steps,
          log_every=log_every, eval_every=eval_every, display=display,
          checkpointer=checkpoints.Checkpointer(resources.manager),
          evaluate=_evaluator(trainer, data, run_facts, display), stop=stop)
  return outcome.rows


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
      params = _params_from(init_from, trainer, state.params)
      state = state.replace(params=params, ema_params=(
          None if state.ema_params is None else params))
    return state, {}
  state, facts = restored
  logging.info('Resumed from step %d in %s', int(state.step), manager.directory)
  return state, facts


def _params_from(path: str, trainer: trainer_lib.Trainer, params):
  """The checkpoint's weights fitted to `params`, in `params`' shardings."""
  fitted = weights.init_from(path, jax.device_get(params), trainer.module.config)
  return jax.tree.map(
      lambda x, old: jax.make_array_from_callback(x.shape, old.sharding, lambda i: x[i]),
      fitted, params)


def check_setup(data: settings.DataConfig, trainer: trainer_lib.Trainer,
                schedule: schedules.Schedule) -> set[str]:
  """Checks the data, the tasks and the device use before a run starts; returns
  the run's task types (registering its tasks: `import tasks`)."""
  settings.check_fit(data, trainer, schedule)
  run_tasks.check_tasks(data)
  in_run = run_tasks.run_task_types(data.teacher_mixture, data.eval_tasks)
  run_tasks.check_task_types(trainer.module.config, run_tasks.task_type_order(in_run))
  hint = partitioning.unused_accelerator_hint(jax.default_backend())
  if hint:
    logging.warning(hint)
  return in_run


def run_state(trainer: trainer_lib.Trainer, schedule: schedules.Schedule, data: settings.DataConfig,
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


def _evaluator(trainer: trainer_lib.Trainer, data: settings.DataConfig, run: loop.RunState,
               display: console.Progress) -> loop.Evaluate:
  """The loop's evaluation: `evaluation.run_eval`, shown on the progress bar."""
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
  if step < train_steps:
    return []
  try:
    rows = metrics_files.read(model_dir)
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
