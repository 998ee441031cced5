"""The planning command: AOT-compiles both steps, prints JSON, no TensorFlow."""

import json
import os
import subprocess
import sys

from conftest import TEST_XLA_FLAGS

REPO = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
# Runs the command, then reports whether TensorFlow or seqio got imported.
RUN_PLAN = '''
import runpy, sys
sys.argv = ['plan'] + sys.argv[1:]
try:
  runpy.run_module('freelm_jax.plan', run_name='__main__')
except SystemExit as e:
  if e.code:
    raise
print('IMPORTED', sorted({m.split('.')[0] for m in sys.modules} & {'tensorflow', 'seqio'}))
'''


def _plan(*args):
  env = dict(os.environ, PYTHONPATH=REPO)
  env['XLA_FLAGS'] = TEST_XLA_FLAGS  # the command adds its own device count
  return subprocess.run(
      [sys.executable, '-c', RUN_PLAN, '--gin_file=gin/base.gin',
       '--gin.network.ModelConfig.num_layers=2', *args],
      cwd=REPO, env=env, capture_output=True, text=True, timeout=300)


def test_plan_prints_memory_parameters_and_flops_without_tensorflow():
  r = _plan('--num_devices=4', '--gin.FSDP_PARALLELISM=2', '--device_memory_gib=0.01')
  assert r.returncode == 0, r.stderr[-2000:]
  text, imported = r.stdout.rsplit('IMPORTED', 1)
  assert imported.strip() == '[]'
  plan = json.loads(text)
  assert plan['num_devices'] == 4
  assert plan['mesh'] == {'data': 2, 'fsdp': 2, 'tensor': 1}
  assert plan['model']['num_layers'] == 2
  assert plan['gin_files'] == ['gin/base.gin']
  # tiny.gin: d_model 128, vocab 8192, context 128; 12 d^2 + 13 d per block.
  d, v = 128, 8192
  assert plan['parameters'] == v * d + 128 * d + 2 * (12 * d * d + 13 * d) + 2 * d + 2 * d * 8
  for objective in ('lm', 'teacher'):
    step = plan['steps'][objective]
    memory = step['memory_per_device']
    assert memory['peak_bytes'] == (memory['argument_bytes'] + memory['output_bytes']
                                    - memory['alias_bytes'] + memory['temp_bytes'])
    # FSDP halves the state each device holds: arguments < the whole state.
    assert 0 < memory['argument_bytes'] < plan['train_state_gib_all_devices'] * 2**30
    assert step['flops_per_token_formula'] > 6 * 2 * 12 * d * d
    assert step['flops_per_token_compiled'] > 0
  assert plan['fits'] is False  # 0.01 GiB devices are too small
  assert 'once' in plan['flops_note']  # scanned layers: compiled FLOPs count one layer


def test_plan_mesh_that_does_not_fit_the_devices_is_one_line():
  r = _plan('--num_devices=4', '--gin.TENSOR_PARALLELISM=3')
  assert r.returncode == 1
  assert r.stderr.strip().splitlines()[-1] == (
      'error: Mesh data=-1 x fsdp=1 x tensor=3: 3 does not divide the 4 devices.')


def test_plans_packed_teacher_batches_as_the_pipeline_makes_them(monkeypatch):
  """plan's abstract batch has the packed pipeline's keys, shapes and dtypes,
  and the teacher step compiles for it."""
  # In-process, TensorFlow allowed: the pipeline makes the real batch.
  import gin  # pylint: disable=g-import-not-at-top
  import tasks  # pylint: disable=g-import-not-at-top
  from freelm_jax.config import settings  # pylint: disable=g-import-not-at-top
  from freelm_jax.data import input_pipeline  # pylint: disable=g-import-not-at-top
  from freelm_jax.training import runner  # pylint: disable=g-import-not-at-top
  monkeypatch.setitem(sys.modules, 'tasks', tasks)  # trainer_without_data hides it
  gin.clear_config(clear_constants=True)
  try:
    _, data, trainer, _ = runner.trainer_without_data(
        [os.path.join(REPO, 'gin', 'base.gin')],
        ['TEACHER_PACK_LEN = 96', 'TEACHER_BATCH_SIZE = 8', 'network.ModelConfig.num_layers = 1'])
  finally:
    gin.clear_config(clear_constants=True)
    sys.modules['tasks'] = tasks
  abstract = settings.abstract_batches(data, trainer.batch_sharding)['teacher']
  real = next(input_pipeline.teacher_batches('opinions_teacher', data.teacher_seq_len,
                                             8, seed=0, pack_len=96))
  assert {k: (v.shape, v.dtype) for k, v in abstract.items()} == {
      k: (v.shape, v.dtype) for k, v in real.items()}
  assert trainer.compile_step('teacher', trainer.abstract_state(), abstract)
