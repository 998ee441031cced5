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


def _trainer_with(**kwargs):
  optimizer, schedule = trainer_lib.create_optimizer(1e-2, 30, warmup_steps=2)
  mesh = partitioning.create_mesh(1, 1, 1, devices=jax.devices()[:1])
  return trainer_lib.Trainer(
      network.FreeLM(CONFIG), optimizer, schedule,
      {'lm': objectives.LanguageObjective(), 'teacher': objectives.TeacherObjective()},
      mesh, **kwargs)


def test_weights_average_follows_every_step_and_is_what_evaluation_reads():
  trainer = _trainer_with(ema_decay=0.5)
  state = trainer.init_state(seed=0)
  expected = jax.tree.map(np.asarray, state.params)
  for step in range(4):
    objective = PARITY.objective(step)
    state, _ = trainer.train_step(state, trainer.shard_batch(_batches(step)[objective]),
                                  objective)
    rate = min(0.5, (1 + step) / (10 + step))
    expected = jax.tree.map(lambda e, p: rate * e + (1 - rate) * np.asarray(p),
                            expected, state.params)
  jax.tree.map(lambda got, want: np.testing.assert_allclose(got, want, rtol=1e-5, atol=1e-7),
               state.ema_params, expected)
  assert state.eval_params is state.ema_params
  assert not all(np.allclose(e, p) for e, p in zip(
      jax.tree.leaves(state.ema_params), jax.tree.leaves(state.params)))
  assert _trainer().init_state(seed=0).ema_params is None  # off unless asked for


@pytest.mark.parametrize('objective', ['lm', 'teacher'])
def test_learning_rate_scale_scales_only_its_objectives_update(objective):
  batch = _batches()[objective]
  deltas = []
  for scales in ({}, {'teacher': 3.0}):
    trainer = _trainer_with(learning_rate_scales=scales)
    state = trainer.init_state(seed=0)
    before = jax.tree.map(np.asarray, state.params)
    state, metrics = trainer.train_step(state, trainer.shard_batch(batch), objective)
    deltas.append(jax.tree.map(lambda new, old: np.asarray(new) - old, state.params, before))
  factor = 3.0 if objective == 'teacher' else 1.0
  jax.tree.map(lambda scaled, plain: np.testing.assert_allclose(
      scaled, factor * plain, rtol=1e-4, atol=1e-7), deltas[1], deltas[0])


@pytest.mark.parametrize('ema_decay', [0.0, 0.5])
def test_a_checkpoints_weights_are_the_average_where_the_run_kept_one(tmp_path, ema_decay):
  from freelm_jax.core import checkpoints  # pylint: disable=g-import-not-at-top
  from freelm_jax.core import param_layout  # pylint: disable=g-import-not-at-top
  trainer = _trainer_with(ema_decay=ema_decay)
  state = trainer.init_state(seed=0)
  for step in range(2):
    objective = PARITY.objective(step)
    state, _ = trainer.train_step(state, trainer.shard_batch(_batches(step)[objective]),
                                  objective)
  manager = checkpoints.create_manager(str(tmp_path), 1)
  checkpoints.save(manager, 2, state, {})
  checkpoints.finish(manager)
  loaded = checkpoints.load_params(str(tmp_path), CONFIG.num_layers)
  expected = param_layout.scanned(param_layout.to_numpy(state.eval_params), CONFIG.num_layers)
  jax.tree.map(np.testing.assert_array_equal, loaded, expected)
