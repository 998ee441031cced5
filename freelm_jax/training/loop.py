"""The training loop: data, steps, metrics, checkpoints and evaluation, in order.

`train` reads top to bottom: each step takes the next batch of the stream its
objective (picked by a `schedules.Schedule`) reads, dispatches the jitted step,
meters the previous step, logs, saves on the checkpoint cadence, evaluates on
the evaluation cadence and stops at a step when asked to (SIGTERM); then it
saves the last step and runs the final evaluation.

It is handed everything it uses (the trainer, the input streams, a
checkpointer, an evaluation function, a stop signal), so it imports no gin,
TensorFlow or seqio, and a test can drive it with fakes.
"""

import dataclasses
import time
from typing import Any, Callable, Mapping, NamedTuple, Optional, Protocol

from absl import logging
import jax
import numpy as np

from freelm_jax.common import errors
from freelm_jax.core import schedules
from freelm_jax.core import trainer as trainer_lib

# (step, params, stop) -> eval rows; raises errors.Interrupted once `stop()`
# is true between two batches, having written no rows.
Evaluate = Callable[[int, Any, Callable[[], bool]], list[dict]]


class Stream(Protocol):
  """Batches of this process's rows (`prefetch.ProcessIterator`)."""

  def __next__(self) -> dict:
    ...

  def close(self) -> None:
    """Ends the stream's worker."""


class Display(Protocol):
  """Where the loop reports: metric rows and the step reached (`console.Progress`)."""

  def write(self, row: dict) -> None:
    ...

  def step(self, step: int) -> None:
    ...


class Checkpointer(Protocol):
  """Saves the train state with the run's facts (`checkpoints.Checkpointer`)."""

  def due(self, step: int) -> bool:
    """Whether the checkpoint cadence saves `step`."""

  def save(self, step: int, state: Any, facts: dict, force: bool = False) -> None:
    """Starts saving `step` (unless it is saved already)."""

  def finish(self) -> None:
    """Waits until the saves started have committed."""


class Stop(Protocol):
  """Whether the run was asked to stop (`checkpoints.Preemption`)."""

  requested: bool  # set by this process's SIGTERM handler

  def reached(self, step: int) -> bool:
    """Whether to save `step` and stop (every process agrees on the step)."""


@dataclasses.dataclass
class RunState:
  """What each checkpoint records beside the train state.

  Attributes:
    consumed: stream -> batches read, the only count of them: the loop adds to
      it and every checkpoint records it, so a resumed run skips them.
    schedule: the objective schedule's name.
    task_types: the task-type ids, in order.
    trained_task_types: the task types the teacher mixture trains.
  """

  consumed: dict[str, int]
  schedule: str
  task_types: list[str] = dataclasses.field(default_factory=list)
  trained_task_types: list[str] = dataclasses.field(default_factory=list)

  def read(self, stream: str) -> None:
    """Counts one batch read from `stream`."""
    self.consumed[stream] = self.consumed.get(stream, 0) + 1

  def facts(self) -> dict:
    """The checkpoint's run facts (JSON)."""
    return {'batches': dict(self.consumed), 'schedule': self.schedule,
            'task_types': list(self.task_types),
            'trained_task_types': list(self.trained_task_types)}


class Meter:
  """Per-objective means of the step metrics between two log rows, and tokens/s.

  `dispatched` takes a step's metrics while the device still computes them and
  reads the previous step's, so the host never waits on the step it just
  dispatched. A step's time runs from the previous read to its own; the first
  step of each objective (its compilation) is not timed. A non-finite step
  raises NonFiniteError, or with `skip_nonfinite` counts in `skipped_steps`.
  """

  def __init__(self, skip_nonfinite: bool = False,
               clock: Callable[[], float] = time.perf_counter):
    self.skip_nonfinite = skip_nonfinite
    self._clock = clock
    self._last_read = clock()
    self._pending = None  # (step, objective, metrics) not yet read
    self._compiled = set()
    self._reset()

  def _reset(self) -> None:
    self._sums, self._steps, self._seconds, self._tokens, self._skipped = {}, {}, {}, {}, {}

  def dispatched(self, step: int, objective: str, metrics: Mapping[str, Any]) -> None:
    """Holds step `step`'s metrics and reads the previous step's."""
    self.flush()
    self._pending = (step, objective, metrics)

  def flush(self) -> None:
    """Reads the held step's metrics (waiting for that step to finish)."""
    if self._pending is None:
      return
    step, objective, metrics = self._pending
    self._pending = None
    values = dict(jax.device_get(metrics))
    now = self._clock()
    seconds = now - self._last_read if objective in self._compiled else None
    self._compiled.add(objective)
    self._last_read = now
    if not values.pop('nonfinite', 0.0):
      self._add(objective, values, seconds)
    elif self.skip_nonfinite:
      self._skipped[objective] = self._skipped.get(objective, 0) + 1
    else:
      raise nonfinite_error(step, objective, values)

  def _add(self, objective: str, values: dict, seconds: Optional[float]) -> None:
    sums = self._sums.setdefault(objective, {})
    for name, value in values.items():
      sums[name] = sums.get(name, 0.0) + float(value)
    self._steps[objective] = self._steps.get(objective, 0) + 1
    if seconds is not None:
      self._seconds[objective] = self._seconds.get(objective, 0.0) + seconds
      self._tokens[objective] = self._tokens.get(objective, 0.0) + float(values['num_tokens'])

  def rows(self, step: int) -> list[dict]:
    """One train row per objective since the last rows (read up to `step`); resets."""
    self.flush()
    out = []
    for objective in sorted(set(self._sums) | set(self._skipped)):
      sums, count = self._sums.get(objective, {}), self._steps.get(objective, 0)
      row = {'step': step, 'kind': 'train', 'objective': objective}
      row.update({k: v / count for k, v in sums.items() if k != 'num_tokens'})
      seconds = self._seconds.get(objective, 0.0)
      row['tokens_per_s'] = self._tokens[objective] / seconds if seconds else None
      if objective in self._skipped:
        row['skipped_steps'] = self._skipped[objective]
      out.append(row)
    self._reset()
    return out


def nonfinite_error(step: int, objective: str, values: dict) -> errors.NonFiniteError:
  """The error of a step whose loss, gradient or parameters are not finite."""
  what = next((k for k in ('loss', 'grad_norm') if not np.isfinite(values[k])),
              'parameters after the update')
  return errors.NonFiniteError(
      f'non-finite {what} at step {step} ({objective} objective; loss '
      f'{float(values["loss"]):.4g}, grad_norm {float(values["grad_norm"]):.4g}); stopped '
      f'before checkpointing it. Lower LEARNING_RATE, or set '
      f'train_lib.train.skip_nonfinite = True to skip such steps.')


class Outcome(NamedTuple):
  state: Any  # the last train state
  rows: list[dict]  # the final evaluation's rows; [] when the run stopped early
  preempted: bool  # stopped by SIGTERM (during training or the final evaluation)


def train(trainer: trainer_lib.Trainer, state: trainer_lib.TrainState, run: RunState,
          streams: Mapping[str, Stream], schedule: schedules.Schedule, *,
          train_steps: int, log_every: int, eval_every: int, display: Display,
          checkpointer: Checkpointer, evaluate: Evaluate, stop: Stop) -> Outcome:
  """Trains from `state.step` to `train_steps`, saves the last step and evaluates it.

  Steps are numbered by the updates done: the update that `schedule` picks for
  its step 0 makes step 1. Each checkpoint records `run.facts()`; the streams
  are closed once the last step is saved. `eval_every` 0: the final evaluation
  only. On `stop` (SIGTERM) the run saves its current step and returns; an
  evaluation it interrupts writes no rows (the next run of the same command
  runs the final one).
  """
  meter = Meter(trainer.skip_nonfinite)
  preempted = False
  for index in range(int(state.step), train_steps):
    objective = schedule.objective(index)
    stream = trainer.objectives[objective].stream
    batch = trainer.shard_batch(next(streams[stream]))
    state, metrics = trainer.train_step(state, batch, objective)
    run.read(stream)
    step = index + 1
    meter.dispatched(step, objective, metrics)  # reads step - 1's metrics
    preempted = stop.reached(step)
    if step % log_every == 0 or step == train_steps or preempted:
      for row in meter.rows(step):
        display.write(row)
    if preempted:
      break
    if checkpointer.due(step):
      meter.flush()  # a non-finite step raises before it is saved
      checkpointer.save(step, state, run.facts())
    display.step(step)
    if eval_every and step % eval_every == 0 and step < train_steps:
      preempted = _evaluate(evaluate, step, state.eval_params, stop) is None
      if preempted:
        break
  return _finish(state, run, streams, checkpointer, evaluate, stop, preempted)


def _evaluate(evaluate: Evaluate, step: int, params, stop: Stop) -> Optional[list[dict]]:
  """`evaluate`'s rows; None if a stop request interrupted it."""
  try:
    return evaluate(step, params, lambda: stop.requested)
  except errors.Interrupted:
    logging.warning('SIGTERM: evaluation at step %d interrupted; it wrote no rows.', step)
    return None


def _finish(state, run: RunState, streams: Mapping[str, Stream], checkpointer: Checkpointer,
            evaluate: Evaluate, stop: Stop, preempted: bool) -> Outcome:
  """Saves the last step, ends the input workers, then runs the final evaluation."""
  step = int(state.step)
  checkpointer.save(step, state, run.facts(), force=True)
  checkpointer.finish()
  for stream in streams.values():
    stream.close()
  rows = None if preempted else _evaluate(evaluate, step, state.eval_params, stop)
  if rows is None:
    logging.warning('Preempted: saved the checkpoint at step %d; re-run the same '
                    'command to %s.', step,
                    'resume' if preempted else 'run its final evaluation')
    return Outcome(state, [], True)
  return Outcome(state, rows, False)
