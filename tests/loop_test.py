"""The training loop driven directly: fake trainer, streams, checkpointer and
evaluation (numpy only), the real schedules, metering and SIGTERM handler."""

import ast
import dataclasses
import itertools
import os
import signal
import threading
import types

import numpy as np
import pytest

from freelm_jax.common import errors
from freelm_jax.core import checkpoints
from freelm_jax.core import schedules
from freelm_jax.training import loop

PARITY = schedules.get('parity')  # step index 0 trains 'lm', 1 'teacher', ...


@dataclasses.dataclass(frozen=True)
class State:
  step: int
  params: str = 'params'

  @property
  def eval_params(self) -> str:
    return self.params


class Trainer:
  """Objectives 'lm' and 'teacher' on streams of the same names; logs each step."""

  def __init__(self, skip_nonfinite=False, nonfinite_at=(), on_step=None):
    self.skip_nonfinite = skip_nonfinite
    self.objectives = {'lm': types.SimpleNamespace(stream='lm'),
                       'teacher': types.SimpleNamespace(stream='teacher')}
    self.nonfinite_at, self.on_step = set(nonfinite_at), on_step
    self.steps = []  # (step made, objective, batch)

  def shard_batch(self, batch):
    return batch

  def train_step(self, state, batch, objective):
    step = state.step + 1
    self.steps.append((step, objective, batch['id']))
    if self.on_step:
      self.on_step(step)
    bad = step in self.nonfinite_at
    metrics = {'loss': np.float32(np.nan if bad else step), 'grad_norm': np.float32(1.0),
               'num_tokens': np.float32(10), 'nonfinite': np.float32(bad)}
    return State(step), metrics


class Stream:
  """Batches ('name', 0), ('name', 1), ... from batch `start` on."""

  def __init__(self, name, start=0):
    self.batches = ({'id': (name, i)} for i in itertools.count(start))
    self.closed = False

  def __next__(self):
    assert not self.closed
    return next(self.batches)

  def close(self):
    self.closed = True


class Log:
  """Display, checkpointer and evaluation in one, logging what happens in order."""

  def __init__(self, checkpoint_every=1000, eval_batches=3, on_eval_batch=None):
    self.every, self.eval_batches = checkpoint_every, eval_batches
    self.on_eval_batch = on_eval_batch
    self.events, self.rows, self.saved = [], [], {}

  def write(self, row):
    self.rows.append(row)

  def step(self, step):
    self.events.append(('step', step))

  def due(self, step):
    return step % self.every == 0

  def save(self, step, state, facts, force=False):
    assert state.step == step
    self.events.append(('save', step) + (('force',) if force else ()))
    self.saved[step] = facts

  def finish(self):
    self.events.append(('finish',))

  def evaluate(self, step, params, stop):
    self.events.append(('eval', step))
    for batch in range(self.eval_batches):
      if stop():
        raise errors.Interrupted('stopped')
      if self.on_eval_batch:
        self.on_eval_batch(step, batch)
    rows = [{'task': 'x', 'accuracy': 0.5}]
    for row in rows:
      self.write({'step': step, 'kind': 'eval', **row})
    return rows


class Stop:
  """A stop request set by hand (`requested`), as the SIGTERM handler sets it."""

  requested = False

  def reached(self, step):
    del step
    return self.requested


def _train(train_steps, trainer=None, log=None, stop=None, start=0, consumed=None,
           log_every=1, eval_every=0):
  trainer, log, stop = trainer or Trainer(), log or Log(), stop or Stop()
  consumed = dict(consumed or {'lm': 0, 'teacher': 0})
  run = loop.RunState(consumed=consumed, schedule='parity', task_types=['a'],
                      trained_task_types=['a'])
  streams = {name: Stream(name, consumed[name]) for name in ('lm', 'teacher')}
  outcome = loop.train(trainer, State(start), run, streams, PARITY, train_steps=train_steps,
                       log_every=log_every, eval_every=eval_every, display=log,
                       checkpointer=log, evaluate=log.evaluate, stop=stop)
  assert all(s.closed for s in streams.values())
  return outcome, run, trainer, log


def _train_rows(log):
  return [(r['step'], r['objective']) for r in log.rows if r['kind'] == 'train']


def _eval_steps(log):
  return [r['step'] for r in log.rows if r['kind'] == 'eval']


# --- Metering -----------------------------------------------------------------


def _metrics(loss, tokens=10.0, nonfinite=0.0):
  return {'loss': np.float32(loss), 'grad_norm': np.float32(1.0),
          'num_tokens': np.float32(tokens), 'nonfinite': np.float32(nonfinite)}


def test_meter_times_each_step_from_the_previous_read_and_not_its_compilation():
  times = iter([0.0, 1.0, 3.0, 4.0, 6.0])  # the meter's start, then one per read
  meter = loop.Meter(clock=lambda: next(times))
  meter.dispatched(1, 'lm', _metrics(4.0, tokens=100))
  meter.dispatched(2, 'teacher', _metrics(1.0, tokens=30))  # reads step 1 at 1.0: compiled
  meter.dispatched(3, 'lm', _metrics(2.0, tokens=100))  # reads step 2 at 3.0: compiled
  meter.dispatched(4, 'teacher', _metrics(3.0, tokens=30))  # reads step 3 at 4.0: 1 s
  rows = meter.rows(4)  # reads step 4 at 6.0: 2 s
  assert rows == [
      {'step': 4, 'kind': 'train', 'objective': 'lm', 'loss': 3.0, 'grad_norm': 1.0,
       'tokens_per_s': 100.0},
      {'step': 4, 'kind': 'train', 'objective': 'teacher', 'loss': 2.0, 'grad_norm': 1.0,
       'tokens_per_s': 15.0}]
  assert meter.rows(5) == []  # the sums start again after each row


def test_meter_counts_skipped_steps_or_raises_naming_the_step():
  meter = loop.Meter(skip_nonfinite=True)
  meter.dispatched(1, 'lm', _metrics(np.nan, nonfinite=1.0))
  meter.dispatched(2, 'teacher', _metrics(1.0))
  rows = meter.rows(2)
  assert rows[0] == {'step': 2, 'kind': 'train', 'objective': 'lm', 'tokens_per_s': None,
                     'skipped_steps': 1}  # no loss: every step of the window was skipped
  assert rows[1]['loss'] == 1.0 and 'skipped_steps' not in rows[1]

  meter = loop.Meter()
  meter.dispatched(7, 'teacher', _metrics(np.inf, nonfinite=1.0))
  with pytest.raises(errors.NonFiniteError, match=r'non-finite loss at step 7 \(teacher'):
    meter.rows(7)


# --- The loop -------------------------------------------------------------------


def test_rows_every_log_every_steps_and_at_the_last():
  _, _, _, log = _train(5, log_every=2)
  assert _train_rows(log) == [(2, 'lm'), (2, 'teacher'), (4, 'lm'), (4, 'teacher'),
                              (5, 'lm')]
  losses = [r['loss'] for r in log.rows if r['kind'] == 'train']
  assert losses == [1.0, 2.0, 3.0, 4.0, 5.0]  # each the mean of its window's one step


def test_skipped_steps_reach_the_rows_and_the_run_goes_on():
  _, _, _, log = _train(4, trainer=Trainer(skip_nonfinite=True, nonfinite_at={2}),
                        log_every=2)
  rows = {(r['step'], r['objective']): r for r in log.rows if r['kind'] == 'train'}
  assert rows[(2, 'teacher')]['skipped_steps'] == 1 and 'loss' not in rows[(2, 'teacher')]
  assert 'skipped_steps' not in rows[(4, 'teacher')]


def test_checkpoints_on_the_cadence_and_the_last_step_with_the_batches_consumed():
  outcome, run, _, log = _train(7, log=Log(checkpoint_every=3))
  assert [e for e in log.events if e[0] in ('save', 'finish')] == [
      ('save', 3), ('save', 6), ('save', 7, 'force'), ('finish',)]
  assert log.saved[3]['batches'] == {'lm': 2, 'teacher': 1}
  assert log.saved[6]['batches'] == {'lm': 3, 'teacher': 3}
  assert log.saved[7] == {'batches': {'lm': 4, 'teacher': 3}, 'schedule': 'parity',
                          'task_types': ['a'], 'trained_task_types': ['a']}
  assert run.consumed == {'lm': 4, 'teacher': 3}  # the count the checkpoints read
  assert outcome.state.step == 7 and not outcome.preempted
  assert outcome.rows == [{'task': 'x', 'accuracy': 0.5}]


def test_orbax_checkpointer_saves_a_new_run_on_its_cadence_and_the_last_step(tmp_path):
  import jax.numpy as jnp  # pylint: disable=g-import-not-at-top
  from freelm_jax.core import trainer as trainer_lib  # pylint: disable=g-import-not-at-top

  class ArrayTrainer(Trainer):
    def train_step(self, state, batch, objective):
      _, metrics = super().train_step(State(int(state.step)), batch, objective)
      return state.replace(step=state.step + 1), metrics

  manager = checkpoints.create_manager(str(tmp_path), 3, max_to_keep=None)
  state = trainer_lib.TrainState(step=jnp.zeros((), jnp.int32), params={'w': jnp.ones(2)},
                                 opt_state=())
  run = loop.RunState(consumed={'lm': 0, 'teacher': 0}, schedule='parity')
  streams = {name: Stream(name) for name in ('lm', 'teacher')}
  log = Log()
  loop.train(ArrayTrainer(), state, run, streams, PARITY, train_steps=7, log_every=1,
             eval_every=0, display=log, checkpointer=checkpoints.Checkpointer(manager),
             evaluate=log.evaluate, stop=Stop())
  assert manager.all_steps() == [1, 3, 6, 7]  # orbax also saves a new run's first step
  _, facts = checkpoints.restore(manager, state, 6)
  assert facts['batches'] == {'lm': 3, 'teacher': 3}
  manager.close()


def test_a_nonfinite_step_raises_before_it_is_saved():
  log = Log(checkpoint_every=2)
  with pytest.raises(errors.NonFiniteError, match='at step 4'):
    _train(6, trainer=Trainer(nonfinite_at={4}), log=log, log_every=100)
  assert [e for e in log.events if e[0] == 'save'] == [('save', 2)]


def test_evaluates_every_eval_every_steps_after_saving_then_once_at_the_end():
  _, _, _, log = _train(5, log=Log(checkpoint_every=2), eval_every=2)
  assert _eval_steps(log) == [2, 4, 5]
  events = log.events
  assert events.index(('save', 2)) < events.index(('step', 2)) < events.index(('eval', 2))
  assert events[-4:] == [('step', 5), ('save', 5, 'force'), ('finish',), ('eval', 5)]
  _, _, _, log = _train(4, eval_every=2)
  assert _eval_steps(log) == [2, 4]  # the last step's evaluation is the final one


def test_resuming_at_a_step_continues_the_schedule_and_the_streams():
  _, _, full, _ = _train(6)
  _, run, _, log = _train(3, log=Log(checkpoint_every=3))
  _, _, resumed, _ = _train(6, start=3, consumed=log.saved[3]['batches'])
  assert resumed.steps == full.steps[3:]
  assert [objective for _, objective, _ in full.steps] == ['lm', 'teacher'] * 3
  assert run.consumed == {'lm': 2, 'teacher': 1}


def test_a_stop_request_during_a_step_saves_that_step_and_returns():
  stop = Stop()
  trainer = Trainer(on_step=lambda step: setattr(stop, 'requested', step == 3))
  outcome, run, _, log = _train(10, trainer=trainer, log=Log(checkpoint_every=2),
                                stop=stop, log_every=5, eval_every=1)
  assert outcome.preempted and outcome.rows == [] and outcome.state.step == 3
  assert _train_rows(log) == [(3, 'lm'), (3, 'teacher')]  # the partial window is logged
  assert [e for e in log.events if e[0] == 'save'] == [('save', 2), ('save', 3, 'force')]
  assert log.saved[3]['batches'] == run.consumed == {'lm': 2, 'teacher': 1}
  assert _eval_steps(log) == [1, 2]  # no evaluation after the request


def test_a_stop_request_during_a_periodic_evaluation_saves_that_step_and_returns():
  stop = Stop()
  log = Log(on_eval_batch=lambda step, batch: setattr(stop, 'requested', step == 4))
  outcome, _, trainer, log = _train(10, log=log, stop=stop, eval_every=2)
  assert outcome.preempted and outcome.state.step == 4 and len(trainer.steps) == 4
  assert _eval_steps(log) == [2]  # step 4's evaluation wrote no rows
  assert log.events[-3:] == [('eval', 4), ('save', 4, 'force'), ('finish',)]


@pytest.mark.parametrize('when', ['before it', 'after its first batch'])
def test_a_stop_request_around_the_final_evaluation_leaves_it_for_the_next_run(when):
  stop = Stop()
  log = Log(on_eval_batch=lambda step, batch: setattr(stop, 'requested', True))
  if when == 'before it':  # e.g. during the last step's save: no batch is evaluated
    log.finish = lambda: (log.events.append(('finish',)), setattr(stop, 'requested', True))
    log.on_eval_batch = lambda step, batch: pytest.fail('a batch was evaluated')
  outcome, _, _, log = _train(4, log=log, stop=stop)
  assert outcome.preempted and outcome.rows == [] and outcome.state.step == 4
  assert log.events[-3:] == [('save', 4, 'force'), ('finish',), ('eval', 4)]
  assert _eval_steps(log) == []


def test_sigterm_during_the_final_evaluation_stops_it_through_the_real_handler():
  if threading.current_thread() is not threading.main_thread():
    pytest.skip('signal handlers are installed from the main thread only')
  log = Log(on_eval_batch=lambda step, batch: os.kill(os.getpid(), signal.SIGTERM))
  manager = types.SimpleNamespace(reached_preemption=lambda step: False)
  with checkpoints.Preemption(manager) as preemption:
    assert callable(signal.getsignal(signal.SIGTERM))  # its handler: not the default
    outcome, _, _, log = _train(2, log=log, stop=preemption)
  assert preemption.requested and outcome.preempted and _eval_steps(log) == []
  assert ('save', 2, 'force') in log.events


def test_the_loop_module_imports_no_gin_tensorflow_or_seqio():
  tree = ast.parse(open(loop.__file__).read())
  imported = {alias.name.split('.')[0] for node in ast.walk(tree)
              if isinstance(node, ast.Import) for alias in node.names}
  imported |= {node.module.split('.')[0] for node in ast.walk(tree)
               if isinstance(node, ast.ImportFrom)}
  imported |= {alias.name for node in ast.walk(tree)
               if isinstance(node, ast.ImportFrom) for alias in node.names}
  assert not imported & {'gin', 'tensorflow', 'seqio', 'tasks', 'evaluation',
                         'input_pipeline', 'metrics'}
