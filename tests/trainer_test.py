"""The objectives and the jitted steps (no TensorFlow needed)."""

import functools

import jax
import numpy as np
import pytest

from freelm_jax.core import network
from freelm_jax.core import objectives
from freelm_jax.core import partitioning
from freelm_jax.core import schedules
from freelm_jax.core import trainer as trainer_lib

CONFIG = network.ModelConfig(vocab_size=64, num_layers=2, d_model=32,
                             num_heads=4, max_len=16, head_labels=(2, 4))
PARITY = schedules.Parity()


def _batches(seed=0, batch=8, length=12):
  rng = np.random.default_rng(seed)
  tokens = rng.integers(1, 64, (batch, length)).astype(np.int32)
  weights = np.ones((batch, length), np.float32)
  weights[:, -3:] = 0
  lm = {'tokens': tokens, 'targets': np.roll(tokens, -1, 1),
        'positions': np.tile(np.arange(length, dtype=np.int32), (batch, 1)),
        'segment_ids': np.ones_like(tokens), 'weights': weights}
  teacher = {'tokens': tokens, 'lengths': rng.integers(3, length, batch).astype(np.int32),
             'truth': rng.integers(0, 2, batch).astype(np.int32),
             'task_type': rng.integers(0, 4, batch).astype(np.int32),
             'weights': np.ones(batch, np.float32)}
  return {'lm': lm, 'teacher': teacher}


def _trainer(mesh_shape=(1, 1, 1), devices=None):
  optimizer, schedule = trainer_lib.create_optimizer(1e-2, 30, warmup_steps=2)
  devices = devices or jax.devices()[:int(np.prod(mesh_shape))]
  mesh = partitioning.create_mesh(*mesh_shape, devices=devices)
  return trainer_lib.Trainer(
      network.FreeLM(CONFIG), optimizer, schedule,
      {'lm': objectives.LanguageObjective(), 'teacher': objectives.TeacherObjective()}, mesh)


@functools.lru_cache()
def _reference_losses():
  return _losses(_trainer())[0]


def _losses(trainer, steps=6):
  state = trainer.init_state(seed=0)
  losses = []
  for step in range(steps):
    objective = PARITY.objective(step)
    batch = trainer.shard_batch(_batches(step)[objective])
    state, metrics = trainer.train_step(state, batch, objective)
    losses.append(float(metrics['loss']))
  return losses, state


def test_training_reduces_both_losses_and_counts_steps():
  trainer = _trainer()
  state = trainer.init_state(seed=0)
  batches = _batches()
  first = {}
  for step in range(30):
    objective = PARITY.objective(step)
    state, metrics = trainer.train_step(state, trainer.shard_batch(batches[objective]), objective)
    first.setdefault(objective, float(metrics['loss']))
  assert int(state.step) == 30
  for name, objective in trainer.objectives.items():
    loss, _ = jax.jit(lambda p, b: objective.loss(trainer.module, p, b))(
        state.params, batches[name])
    assert float(loss) < 0.7 * first[name], name


@pytest.mark.parametrize('mesh_shape', [(8, 1, 1), (2, 2, 2), (1, 4, 2)])
def test_sharded_training_matches_one_device(mesh_shape):
  reference = _reference_losses()
  sharded, state = _losses(_trainer(mesh_shape, jax.devices()[:8]))
  np.testing.assert_allclose(sharded, reference, rtol=1e-4)
  kernel = state.params['decoder']['layers']['mlp']['fc']['kernel']
  assert kernel.sharding.spec == jax.sharding.PartitionSpec(None, 'fsdp', 'tensor')


def test_lm_loss_ignores_zero_weight_positions():
  trainer = _trainer()
  state = trainer.init_state(seed=0)
  lm = _batches()['lm']
  changed = dict(lm, targets=np.where(lm['weights'] > 0, lm['targets'], 0))
  loss = lambda batch: objectives.LanguageObjective().loss(
      trainer.module, state.params, batch)[0]
  np.testing.assert_allclose(loss(lm), loss(changed), rtol=1e-6)


def test_teacher_loss_reads_the_cls_position():
  trainer = _trainer()
  state = trainer.init_state(seed=0)
  teacher = _batches()['teacher']
  p = trainer.truth_probability(state.params, *trainer.shard_batch(
      {'t': teacher['tokens'], 'l': teacher['lengths']}).values())
  # Tokens after each row's [cls] (index lengths-1) must not matter.
  scrambled = teacher['tokens'].copy()
  for i, n in enumerate(teacher['lengths']):
    scrambled[i, n:] = 1
  p2 = trainer.truth_probability(state.params, *trainer.shard_batch(
      {'t': scrambled, 'l': teacher['lengths']}).values())
  np.testing.assert_allclose(p, p2, rtol=1e-5)
  assert np.all((np.asarray(p) > 0) & (np.asarray(p) < 1))
