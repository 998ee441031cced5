"""Objective schedules, and a new objective added without editing the trainer."""

import dataclasses
import sys

import gin
import jax
import jax.numpy as jnp
import numpy as np
import pytest

from freelm_jax.core import network
from freelm_jax.core import objectives as objectives_lib
from freelm_jax.core import partitioning
from freelm_jax.core import schedules
from freelm_jax.core import trainer as trainer_lib
from freelm_jax.training import runner

CONFIG = network.ModelConfig(vocab_size=64, num_layers=1, d_model=32,
                             num_heads=4, max_len=16, head_labels=(2, 4))


@dataclasses.dataclass(frozen=True)
class PropositionTextObjective:
  """Next-token loss on the teacher stream's propositions (padding masked)."""

  name: str = 'proposition_text'
  stream: str = 'teacher'

  def loss(self, module, params, batch):
    tokens = batch['tokens']
    positions = jnp.broadcast_to(jnp.arange(tokens.shape[1]), tokens.shape)
    weights = (positions < batch['lengths'][:, None] - 1) * batch['weights'][:, None]
    return objectives_lib.LanguageObjective().loss(module, params, {
        'tokens': tokens, 'targets': jnp.roll(tokens, -1, axis=1),
        'positions': positions, 'weights': weights})

  def num_tokens(self, batch):
    return jnp.sum(batch['lengths'] * batch['weights'])


class ThreeWay(schedules.Schedule):
  """lm, teacher, proposition_text, repeated (counted by the default `counts`)."""

  name = 'three_way'
  objectives = ('lm', 'teacher', 'proposition_text')

  def objective(self, step):
    return self.objectives[step % 3]


gin.external_configurable(PropositionTextObjective, module='schedules_test')
gin.external_configurable(ThreeWay, module='schedules_test')


def _counted(schedule, num_steps):
  counts = dict.fromkeys(schedule.objectives, 0)
  for step in range(num_steps):
    counts[schedule.objective(step)] += 1
  return counts


def test_built_in_schedules_count_steps_from_zero():
  parity = schedules.from_name('parity')
  assert [parity.objective(s) for s in range(4)] == ['lm', 'teacher', 'lm', 'teacher']
  assert schedules.from_name('lm_only').objective(7) == 'lm'
  assert schedules.from_name('teacher_only').objective(6) == 'teacher'
  assert parity.counts(5) == {'lm': 3, 'teacher': 2}
  assert schedules.TeacherOnly().objectives == ('teacher',)
  cycle = schedules.Cycle(['teacher', 'lm', 'lm'])
  for schedule in (*(s() for s in schedules.BUILT_IN), cycle, ThreeWay()):
    for num_steps in (0, 1, 2, 3, 7, 100, 1001):
      assert schedule.counts(num_steps) == _counted(schedule, num_steps), (schedule, num_steps)


def test_names_select_schedules_and_an_instance_passes_through():
  assert schedules.names()[:3] == ('parity', 'lm_only', 'teacher_only')
  assert isinstance(schedules.get('three_way'), ThreeWay)  # a subclass with a name
  cycle = schedules.Cycle(['lm'])
  assert schedules.get(cycle) is cycle


def test_unknown_schedule_name_is_one_line_naming_the_choices():
  with pytest.raises(ValueError) as error:
    schedules.from_name('alternate')
  message = str(error.value)
  assert '\n' not in message
  assert message.startswith("OBJECTIVE_SCHEDULE='alternate' is not one of parity, lm_only, "
                            'teacher_only')


def _batches(seed=0, batch=8, length=12):
  rng = np.random.default_rng(seed)
  tokens = rng.integers(1, 64, (batch, length)).astype(np.int32)
  lm = {'tokens': tokens, 'targets': np.roll(tokens, -1, 1),
        'positions': np.tile(np.arange(length, dtype=np.int32), (batch, 1)),
        'weights': np.ones((batch, length), np.float32)}
  teacher = {'tokens': tokens, 'lengths': rng.integers(3, length, batch).astype(np.int32),
             'truth': rng.integers(0, 2, batch).astype(np.int32),
             'task_type': rng.integers(0, 4, batch).astype(np.int32),
             'weights': np.ones(batch, np.float32)}
  return {'lm': lm, 'teacher': teacher}


def _trainer(objectives):
  optimizer, learning_rate = trainer_lib.create_optimizer(1e-2, 30, warmup_steps=2)
  return trainer_lib.Trainer(
      network.FreeLM(CONFIG), optimizer, learning_rate, {o.name: o for o in objectives},
      partitioning.create_mesh(1, 1, 1, devices=jax.devices()[:1]))


def test_a_new_objective_and_schedule_train_through_the_trainer():
  trainer = _trainer([objectives_lib.LanguageObjective(), objectives_lib.TeacherObjective(),
                      PropositionTextObjective()])
  schedule = ThreeWay()
  trainer.check_schedule(schedule)
  assert trainer.stream_counts(schedule, 7) == {'lm': 3, 'teacher': 4}
  state, batches, losses = trainer.init_state(seed=0), _batches(), {}
  for step in range(12):
    objective = schedule.objective(step)
    batch = trainer.shard_batch(batches[trainer.objectives[objective].stream])
    state, metrics = trainer.train_step(state, batch, objective)
    losses.setdefault(objective, []).append(float(metrics['loss']))
  assert int(state.step) == 12
  assert {o: len(l) for o, l in losses.items()} == schedule.counts(12)
  assert all(np.isfinite(l).all() for l in losses.values())
  assert losses['proposition_text'][-1] < losses['proposition_text'][0]


def test_a_schedule_using_an_objective_the_trainer_lacks_is_an_error():
  trainer = _trainer([objectives_lib.LanguageObjective(), objectives_lib.TeacherObjective()])
  with pytest.raises(ValueError, match="'proposition_text'.*extra_objectives"):
    trainer.check_schedule(ThreeWay())


@pytest.mark.parametrize('schedule_binding', [
    'train_lib.train.objective_schedule = @schedules_test.ThreeWay()',
    "OBJECTIVE_SCHEDULE = 'three_way'",
])
def test_gin_binds_a_new_objective_and_schedule(schedule_binding, monkeypatch):
  monkeypatch.setitem(sys.modules, 'tasks', None)  # restored after the test
  try:
    _, _, trainer, schedule = runner.trainer_without_data(['gin/base.gin'], [
        'train_lib.train.extra_objectives = [@schedules_test.PropositionTextObjective()]',
        schedule_binding])
  finally:
    gin.clear_config(clear_constants=True)
  assert isinstance(schedule, ThreeWay)
  assert list(trainer.objectives) == ['lm', 'teacher', 'proposition_text']
  assert trainer.stream_counts(schedule, 3) == {'lm': 1, 'teacher': 2}


def test_gin_binds_a_built_in_schedule_instance(monkeypatch):
  monkeypatch.setitem(sys.modules, 'tasks', None)
  try:
    _, _, _, schedule = runner.trainer_without_data(['gin/base.gin'], [
        'train_lib.train.objective_schedule = @schedules.LMOnly()'])
  finally:
    gin.clear_config(clear_constants=True)
  assert isinstance(schedule, schedules.LMOnly)
