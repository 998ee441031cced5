"""Multi-host training for real: several processes on localhost, gloo collectives.

Run as a script, this file is one worker process of such a run (see `_worker`).
"""

import json
import os
import socket
import subprocess
import sys
import time
import types

from conftest import TEST_XLA_FLAGS
import gin
import numpy as np
import pytest

REPO = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
TINY_RUN = [
    '--gin.network.ModelConfig.num_layers=1', '--gin.network.ModelConfig.d_model=32',
    '--gin.network.ModelConfig.num_heads=2', '--gin.LM_BATCH_SIZE=8',
    '--gin.TEACHER_BATCH_SIZE=8', '--gin.LM_SEQ_LEN=32', '--gin.TEACHER_SEQ_LEN=24',
    '--gin.WARMUP_STEPS=2', '--gin.CHECKPOINT_EVERY=4', '--gin.train_lib.train.log_every=1',
    "--gin.train_lib.DataConfig.eval_tasks=['opinions_tweet_sentiment']",
    '--gin.train_lib.DataConfig.eval_max_examples=40', '--gin.LM_EVAL_BATCHES=1',
    '--gin.train_lib.DataConfig.eval_probe=False',  # lm_eval_test checks the probe
]


def _free_port() -> int:
  with socket.socket() as s:
    s.bind(('127.0.0.1', 0))
    return s.getsockname()[1]


def _env(devices: int) -> dict:
  return dict(os.environ, JAX_PLATFORMS='cpu', PYTHONPATH=REPO,
              XLA_FLAGS=f'--xla_force_host_platform_device_count={devices} {TEST_XLA_FLAGS}')


def _launch(args: list, processes: int, devices: int, timeout: float = 600) -> list:
  """Runs `python args...` as `processes` processes of one JAX run; their results."""
  port = _free_port()
  cluster = lambda i: ([f'--coordinator_address=127.0.0.1:{port}',
                        f'--num_processes={processes}', f'--process_id={i}']
                       if processes > 1 else [])
  procs = [subprocess.Popen([sys.executable, *args, *cluster(i)], cwd=REPO, env=_env(devices),
                            stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True)
           for i in range(processes)]
  deadline = time.monotonic() + timeout
  results = []
  for p in procs:
    try:
      out, err = p.communicate(timeout=max(deadline - time.monotonic(), 1))
    except subprocess.TimeoutExpired:
      for q in procs:
        q.kill()
      raise
    results.append(types.SimpleNamespace(returncode=p.returncode, stdout=out, stderr=err))
  for i, r in enumerate(results):
    assert r.returncode == 0, f'process {i}:\n{r.stderr[-3000:]}'
  return results


# --- Which rows each process feeds (fake devices: no cluster needed). ---

def _fake_mesh(shape, owner):
  devices = [types.SimpleNamespace(id=i, process_index=owner(i)) for i in range(np.prod(shape))]
  return types.SimpleNamespace(devices=np.array(devices).reshape(shape),
                               shape=dict(zip(('data', 'fsdp', 'tensor'), shape)))


def test_each_process_feeds_its_block_of_rows():
  from freelm_jax.core import partitioning  # pylint: disable=g-import-not-at-top
  mesh = _fake_mesh((2, 2, 2), lambda i: i // 4)  # 2 processes x 4 devices
  assert [partitioning.process_data_shard(mesh, p) for p in (0, 1)] == [(0, 2), (1, 2)]
  # Tensor parallelism across the processes: both hold every row, read the same shard.
  mesh = _fake_mesh((1, 2, 4), lambda i: i % 4 // 2)
  assert [partitioning.process_data_shard(mesh, p) for p in (0, 1)] == [(0, 1), (0, 1)]
  mesh = _fake_mesh((1, 1, 8), lambda i: i // 4)
  assert [partitioning.process_data_shard(mesh, p) for p in (0, 1)] == [(0, 1), (0, 1)]


def test_interleaved_rows_are_refused():
  from freelm_jax.core import partitioning  # pylint: disable=g-import-not-at-top
  mesh = _fake_mesh((4, 1, 1), lambda i: i % 2)
  with pytest.raises(ValueError, match=r'contiguous'):
    partitioning.process_data_shard(mesh, 0)


def test_multi_slice_data_axis_spans_the_slices():
  from freelm_jax.core import partitioning  # pylint: disable=g-import-not-at-top
  devices = [types.SimpleNamespace(id=i, slice_index=i // 4, process_index=i // 2,
                                   platform='cpu', device_kind='cpu') for i in range(8)]
  grid = partitioning.device_grid((4, 2, 1), devices)
  slice_of = np.vectorize(lambda d: d.slice_index)(grid)
  assert slice_of[:2].max() == 0 and slice_of[2:].min() == 1  # data: slice 0, then 1
  assert (slice_of == slice_of[:, :1]).all()  # fsdp and tensor inside one slice
  with pytest.raises(ValueError, match='DATA_PARALLELISM=1 must be a multiple of the 2 TPU'):
    partitioning.device_grid((1, 8, 1), devices)


# --- Bad input: one line with the numbers, non-zero exit, no hang. ---

def test_mesh_and_batch_errors_name_the_numbers():
  import jax  # pylint: disable=g-import-not-at-top
  from freelm_jax.core import partitioning  # pylint: disable=g-import-not-at-top
  with pytest.raises(ValueError, match=r'data=3 x fsdp=1 x tensor=1 = 3 devices, but 8'):
    partitioning.create_mesh(3, 1, 1)
  with pytest.raises(ValueError, match=r'3 does not divide the 8 devices'):
    partitioning.create_mesh(-1, 3, 1)
  mesh = partitioning.create_mesh(2, 2, 2, jax.devices()[:8])
  with pytest.raises(ValueError, match=r'LM_BATCH_SIZE=6 does not divide over data x fsdp = '
                     r'2 x 2 = 4 batch shards'):
    partitioning.check_batch_size('LM_BATCH_SIZE', 6, mesh)
  with pytest.raises(ValueError, match='go together'):
    partitioning.initialize_distributed('localhost:1234', None, 0)
  with pytest.raises(ValueError, match=r'--process_id=2 is not in \[0, --num_processes=2\)'):
    partitioning.initialize_distributed('localhost:1234', 2, 2)


def test_a_batch_that_does_not_divide_the_mesh_fails_before_writing(tmp_path):
  from settings_test import _train  # pylint: disable=g-import-not-at-top  # what the CLI runs
  model_dir = tmp_path / 'model'
  try:
    with pytest.raises(SystemExit) as exit_info:
      _train(['LM_BATCH_SIZE = 12', 'FSDP_PARALLELISM = 8'], model_dir)
  finally:
    gin.clear_config(clear_constants=True)
  assert exit_info.value.code == (
      'error: LM_BATCH_SIZE=12 does not divide over data x fsdp = 1 x 8 = 8 batch shards.')
  assert not model_dir.exists()


def test_unreachable_coordinator_exits_within_the_timeout(tmp_path):
  start = time.monotonic()
  r = subprocess.run(
      [sys.executable, '-m', 'freelm_jax.train', '--gin_file=gin/base.gin',
       f'--model_dir={tmp_path}/model', f'--coordinator_address=127.0.0.1:{_free_port()}',
       '--num_processes=2', '--process_id=1', '--distributed_timeout=2'],
      cwd=REPO, env=_env(4), capture_output=True, text=True, timeout=120)
  assert r.returncode == 1
  assert r.stderr.strip().splitlines()[-1].startswith(
      'error: process 1 of 2 could not join the coordinator at 127.0.0.1:')
  assert '--distributed_timeout=2s' in r.stderr
  assert time.monotonic() - start < 100  # start-up imports + 2 s, not JAX's 300 s.


# --- Two real processes: same losses as one, checkpoints cross over. ---

def _worker_args(out, mesh, save_dir='', restore_dir=''):
  return [os.path.abspath(__file__), f'--out={out}', f'--mesh={mesh}',
          f'--save_dir={save_dir}', f'--restore_dir={restore_dir}']


def test_two_processes_train_like_one_and_checkpoints_cross_over(tmp_path):
  out = lambda name: tmp_path / f'{name}.json'
  # 2 processes x 4 devices, mesh 2x2x2: steps 0-5, checkpoint at 3.
  _launch(_worker_args(out('two'), '2,2,2', save_dir=tmp_path / 'two'), processes=2, devices=4)
  # 1 process x 8 devices, mesh 8x1x1: from scratch, then resumed from the 2-process step 3.
  _launch(_worker_args(out('one'), '8,1,1', save_dir=tmp_path / 'one',
                       restore_dir=tmp_path / 'two'), processes=1, devices=8)
  # 2 processes again, mesh 1x4x2: resumed from the 1-process step 3.
  _launch(_worker_args(out('back'), '1,4,2', restore_dir=tmp_path / 'one'),
          processes=2, devices=4)
  two, one, back = (json.loads(out(n).read_text()) for n in ('two', 'one', 'back'))
  np.testing.assert_allclose(one['scratch']['losses'], two['scratch']['losses'], rtol=1e-4)
  np.testing.assert_allclose(one['resumed']['losses'], two['scratch']['losses'][3:], rtol=1e-4)
  np.testing.assert_allclose(back['resumed']['losses'], one['scratch']['losses'][3:], rtol=1e-4)
  for run in (one['scratch'], one['resumed'], back['resumed']):
    # atol: a near-zero parameter (norm ~5e-5) differs by float rounding
    # between the meshes' reduction orders.
    np.testing.assert_allclose(run['param_norms'], two['scratch']['param_norms'],
                               rtol=1e-4, atol=1e-4)


def test_train_cli_two_processes_log_once_and_one_process_resumes(tmp_path):
  model_dir = tmp_path / 'model'
  train = ['-m', 'freelm_jax.train', '--gin_file=gin/base.gin', f'--model_dir={model_dir}',
           *TINY_RUN]
  results = _launch([*train, '--gin.TRAIN_STEPS=4'], processes=2, devices=4)
  rows = [json.loads(line) for line in (model_dir / 'metrics.jsonl').read_text().splitlines()]
  assert [r['step'] for r in rows if r['kind'] == 'train'] == [1, 2, 3, 4]
  assert [r['task'] for r in rows if r['kind'] == 'eval' and 'accuracy' in r] == ['opinions_tweet_sentiment']
  assert rows[-1]['num_examples'] == 40  # each process's rows, gathered
  tables = [r.stdout[r.stdout.index('task '):] for r in results]
  assert tables[0] == tables[1] and 'opinions_tweet_sentiment' in tables[0]  # both score the same
  assert '4' in os.listdir(model_dir / 'checkpoints')
  # One process, 8 devices, another mesh: resumes at step 4.
  one = _launch([*train, '--gin.TRAIN_STEPS=6', '--gin.FSDP_PARALLELISM=2',
                 '--gin.train_lib.DataConfig.eval_tasks=[]', '--gin.LM_EVAL_BATCHES=0'],
                processes=1, devices=8)[0]
  assert 'Resumed from step 4' in (model_dir / 'train.log').read_text()
  rows = [json.loads(line) for line in (model_dir / 'metrics.jsonl').read_text().splitlines()]
  assert [r['step'] for r in rows if r['kind'] == 'train'] == [1, 2, 3, 4, 5, 6]


def _batches(step: int, rows: int = 8, length: int = 12) -> dict:
  """Step `step`'s global batches of both objectives (the same in every process)."""
  rng = np.random.default_rng(step)
  tokens = rng.integers(1, 64, (rows, length)).astype(np.int32)
  lm = {'tokens': tokens, 'targets': np.roll(tokens, -1, 1),
        'positions': np.tile(np.arange(length, dtype=np.int32), (rows, 1)),
        'segment_ids': np.ones_like(tokens), 'weights': np.ones((rows, length), np.float32)}
  teacher = {'tokens': tokens, 'lengths': rng.integers(3, length, rows).astype(np.int32),
             'truth': rng.integers(0, 2, rows).astype(np.int32),
             'task_type': rng.integers(0, 4, rows).astype(np.int32),
             'weights': np.ones(rows, np.float32)}
  return {'lm': lm, 'teacher': teacher}


def _worker():
  """One process of a tiny run: 6 parity steps, checkpoint at 3 or resume from it."""
  # pylint: disable=g-import-not-at-top
  from absl import flags
  flags.DEFINE_string('out', None, 'JSON written by process 0.')
  flags.DEFINE_string('mesh', '1,1,1', 'data,fsdp,tensor')
  flags.DEFINE_string('save_dir', '', 'Checkpoint directory to write at step 3.')
  flags.DEFINE_string('restore_dir', '', 'Checkpoint directory to resume from.')
  from freelm_jax import cli
  cli.define_flags()
  flags.FLAGS(sys.argv)
  cli.initialize_distributed()
  import jax
  from freelm_jax.core import checkpoints, network, objectives, partitioning, trainer as trainer_lib
  f = flags.FLAGS
  optimizer, schedule = trainer_lib.create_optimizer(1e-2, 30, warmup_steps=2)
  trainer = trainer_lib.Trainer(
      network.FreeLM(network.ModelConfig(vocab_size=64, num_layers=1, d_model=32, num_heads=4,
                                         max_len=16, head_labels=(2, 4))),
      optimizer, schedule,
      {'lm': objectives.LanguageObjective(), 'teacher': objectives.TeacherObjective()},
      partitioning.create_mesh(*map(int, f.mesh.split(','))))
  results = {}
  if f.save_dir:
    results['scratch'] = _train_steps(trainer, trainer.init_state(seed=0), f.save_dir)
  if f.restore_dir:
    manager = checkpoints.create_manager(f.restore_dir, 3)
    state, _ = checkpoints.restore(manager, trainer.abstract_state(), 3)
    manager.close()
    results['resumed'] = _train_steps(trainer, state)
  if jax.process_index() == 0:
    with open(f.out, 'w') as out:
      json.dump(results, out)


def _train_steps(trainer, state, save_dir: str = '') -> dict:
  """Steps state.step..5 (saving step 3 to `save_dir`): losses, final param norms."""
  # pylint: disable=g-import-not-at-top
  import jax
  from freelm_jax.core import checkpoints, partitioning, schedules
  losses = []
  for step in range(int(state.step), 6):
    objective = schedules.Parity().objective(step)
    batch = trainer.shard_batch(trainer.process_rows(_batches(step)[objective]))
    state, metrics = trainer.train_step(state, batch, objective)
    losses.append(float(metrics['loss']))
    if save_dir and step + 1 == 3:
      manager = checkpoints.create_manager(save_dir, 3)
      checkpoints.save(manager, 3, state, {})
      manager.wait_until_finished()
      manager.close()
  norms = jax.jit(lambda p: [jax.numpy.linalg.norm(x) for x in jax.tree.leaves(p)],
                  out_shardings=partitioning.replicated(trainer.mesh))(state.params)
  return {'losses': losses, 'param_norms': [float(n) for n in norms]}


if __name__ == '__main__':
  _worker()
