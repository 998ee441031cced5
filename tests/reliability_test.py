"""Reliability: exact resume after SIGKILL, SIGTERM preemption, damaged
checkpoints, the NaN guard and the errors a user can run into."""

import itertools
import os
import shutil
import signal
import subprocess
import sys
import time

import gin
import jax
import numpy as np
import pytest

from freelm_jax.config import gin_utils
from freelm_jax.core import checkpoints
from freelm_jax.core import trainer as trainer_lib
from freelm_jax.training import metrics as metrics_lib
from freelm_jax.training import runner

REPO = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
TINY = [
    'network.ModelConfig.num_layers = 1', 'network.ModelConfig.d_model = 32',
    'network.ModelConfig.num_heads = 2', 'LM_BATCH_SIZE = 8', 'TEACHER_BATCH_SIZE = 8',
    'LM_SEQ_LEN = 32', 'TEACHER_SEQ_LEN = 24', 'WARMUP_STEPS = 2',
    'train_lib.train.log_every = 1', 'train_lib.DataConfig.eval_tasks = []',
    'LM_EVAL_BATCHES = 0',  # no test here reads an evaluation
]

# Streams whose tf.data iterators can be checkpointed (text lines, in-memory
# rows), so a resume restores iterator snapshots instead of re-reading, and one
# that cannot (a Python generator), which resumes by re-reading.
SNAPSHOT_TASKS = '''
import os
import seqio
import tensorflow as tf
import tasks

_DIR = os.path.dirname(os.path.abspath(__file__))
with open(os.path.join(_DIR, 'lm.txt'), 'w') as f:
  f.writelines(f'line {i}: a sentence about thing {i * 7 % 101} and word {i % 13}.\\n'
               for i in range(400))
tasks.register_language('rel_lm', {'train': os.path.join(_DIR, 'lm.txt')},
                        shuffle_buffer_size=200)
_ROWS = {'word': [f'word{i}' for i in range(300)], 'label': [i % 2 for i in range(300)]}
tasks.register(
    'rel_teacher', source=seqio.FunctionDataSource(
        lambda split, shuffle_files, seed=None: tf.data.Dataset.from_tensor_slices(_ROWS),
        splits=['train']),
    instance='{word}', propositions={0: '{word} is even.', 1: '{word} is odd.'},
    label_field='label', task_type='rel_parity', shuffle_buffer_size=100)
tasks.register(
    'rel_generator', source=seqio.FunctionDataSource(
        lambda split, shuffle_files, seed=None: tf.data.Dataset.from_generator(
            lambda: zip(_ROWS['word'], _ROWS['label']),
            output_signature=(tf.TensorSpec([], tf.string), tf.TensorSpec([], tf.int32))).map(
                lambda word, label: {'word': word, 'label': label}),
        splits=['train']),
    instance='{word}', propositions={0: '{word} is even.', 1: '{word} is odd.'},
    label_field='label', task_type='rel_parity', shuffle_buffer_size=100)
'''


def _write_snapshot_tasks(directory):
  (directory / 'rel_tasks.py').write_text(SNAPSHOT_TASKS)


def _command(model_dir, *bindings, module_dir=None):
  args = [sys.executable, '-m', 'freelm_jax.train', '--gin_file=gin/base.gin',
          f'--model_dir={model_dir}'] + [f'--gin_bindings={b}' for b in TINY + list(bindings)]
  if module_dir:
    args += ['--module_import=rel_tasks',
             "--gin_bindings=train_lib.DataConfig.lm_task = 'rel_lm'",
             "--gin_bindings=train_lib.DataConfig.teacher_mixture = 'rel_teacher'"]
  return args


def _env(module_dir=None):
  return dict(os.environ, PYTHONPATH=os.pathsep.join(
      [REPO] + ([str(module_dir)] if module_dir else [])))


def _run(model_dir, *bindings, module_dir=None):
  return subprocess.run(_command(model_dir, *bindings, module_dir=module_dir), cwd=REPO,
                        env=_env(module_dir), capture_output=True, text=True, timeout=300)


def _start(model_dir, *bindings, module_dir=None):
  """Starts a run; its stderr goes to `<model_dir>.log` (a pipe could fill up)."""
  log = open(f'{model_dir}.log', 'w')  # pylint: disable=consider-using-with
  process = subprocess.Popen(_command(model_dir, *bindings, module_dir=module_dir),
                             cwd=REPO, env=_env(module_dir), stdout=subprocess.DEVNULL,
                             stderr=log)
  process.log_path = log.name
  return process


def _log(process):
  with open(process.log_path) as f:
    return f.read()


def _train_rows(model_dir):
  path = os.path.join(model_dir, 'metrics.jsonl')
  if not os.path.exists(path):
    return []
  return [r for r in metrics_lib.read(model_dir) if r['kind'] == 'train']


def _wait_for_step(process, model_dir, step, timeout=240, saved=False):
  """Waits until metrics.jsonl has a row at `step` or later (and, if `saved`,
  a checkpoint is committed)."""
  deadline = time.time() + timeout
  while time.time() < deadline:
    if (any(r['step'] >= step for r in _train_rows(model_dir))
        and (not saved or (os.path.isdir(os.path.join(model_dir, 'checkpoints'))
                           and _checkpoint_steps(model_dir)))):
      return
    if process.poll() is not None:
      raise AssertionError(f'run ended early: {_log(process)[-2000:]}')
    time.sleep(0.05)
  raise AssertionError(f'no step {step} within {timeout} s')


def _checkpoint_steps(model_dir):
  return sorted(int(d) for d in os.listdir(os.path.join(model_dir, 'checkpoints'))
                if d.isdigit())


def _losses(rows):
  return {(r['step'], r['objective']): r['loss'] for r in rows}


@pytest.fixture(scope='module')
def snapshot_tasks(tmp_path_factory):
  directory = tmp_path_factory.mktemp('tasks')
  _write_snapshot_tasks(directory)
  return directory


@pytest.mark.parametrize('stream, name, packing', [
    ('lm', 'rel_lm', {}), ('teacher', 'rel_teacher', {}), ('lm', 'opinions_lm', {}),
    ('teacher', 'rel_generator', {}), ('teacher', 'rel_teacher', {'pack_len': 48})])
def test_input_stream_resumes_at_a_batch_from_its_snapshot(
    snapshot_tasks, tmp_path, monkeypatch, stream, name, packing):
  from freelm_jax.data import input_pipeline  # pylint: disable=g-import-not-at-top
  monkeypatch.syspath_prepend(str(snapshot_tasks))
  __import__('rel_tasks')
  restored_counts = []
  restore = input_pipeline.IteratorSnapshots.restore

  def spy(self, *args):
    iterator, count = restore(self, *args)
    restored_counts.append(count)
    return iterator, count

  monkeypatch.setattr(input_pipeline.IteratorSnapshots, 'restore', spy)
  batches = getattr(input_pipeline, f'{stream}_batches')
  kwargs = dict(name=name, seq_len=24, batch_size=4, seed=0, **packing)
  reference = list(itertools.islice(batches(**kwargs), 12))
  state = dict(state_dir=str(tmp_path / 'iterators'), snapshot_every=3)
  assert len(list(itertools.islice(batches(**kwargs, **state), 8))) == 8
  resumed = list(itertools.islice(batches(**kwargs, skip_batches=7, **state), 5))
  for got, want in zip(resumed, reference[7:], strict=True):
    assert all(np.array_equal(got[k], want[k]) for k in want)
  checkpointable = name != 'rel_generator'  # JSONL is; a generator is not.
  assert restored_counts == [6 if checkpointable else 0]
  done = sorted(f for f in os.listdir(tmp_path / 'iterators') if f.endswith('.done'))
  assert [int(f[:-5].rsplit('-', 1)[1]) for f in done] == ([3, 6, 9] if checkpointable else [])


def test_input_snapshots_stop_at_what_the_run_reads(tmp_path):
  """A worker runs ahead of the trainer; snapshots past the run's end are not written."""
  import tensorflow as tf  # pylint: disable=g-import-not-at-top
  from freelm_jax.data import input_pipeline  # pylint: disable=g-import-not-at-top
  snapshots = input_pipeline.IteratorSnapshots.create(str(tmp_path), ('range',), every=2,
                                                       keep=10, until=5)
  ds = tf.data.Dataset.range(100).batch(2)
  assert len(list(itertools.islice(input_pipeline.resumable_batches(ds, 0, snapshots), 9))) == 9
  assert snapshots.counts() == [2, 4]


def test_sigkill_then_same_command_logs_the_uninterrupted_losses(snapshot_tasks, tmp_path):
  steps = ['TRAIN_STEPS = 30', 'CHECKPOINT_EVERY = 10']
  reference = tmp_path / 'reference'
  result = _run(reference, *steps, module_dir=snapshot_tasks)
  assert result.returncode == 0, result.stderr[-3000:]
  expected = _losses(_train_rows(reference))

  killed = tmp_path / 'killed'
  process = _start(killed, *steps, module_dir=snapshot_tasks)
  _wait_for_step(process, killed, 15, saved=True)  # step 10's async save committed
  process.send_signal(signal.SIGKILL)
  process.wait()
  before = len(_train_rows(killed))
  restore_point = _checkpoint_steps(killed)[-1]
  assert 0 < restore_point < 30
  result = _run(killed, *steps, module_dir=snapshot_tasks)
  assert result.returncode == 0, result.stderr[-3000:]

  resumed = _train_rows(killed)[before:]
  assert resumed[0]['step'] == restore_point + 1
  assert {r['objective'] for r in resumed} == {'lm', 'teacher'}
  assert _losses(resumed) == {k: v for k, v in expected.items() if k[0] > restore_point}
  assert os.listdir(killed / 'iterators' / 'lm.process0')  # snapshots were written


def test_sigterm_saves_the_current_step_and_exits_0(tmp_path, monkeypatch):
  model_dir = tmp_path / 'model'
  process = _start(model_dir, 'TRAIN_STEPS = 100000', 'CHECKPOINT_EVERY = 100000')
  _wait_for_step(process, model_dir, 5)
  process.send_signal(signal.SIGTERM)
  sent = time.time()
  time.sleep(0.2)
  process.send_signal(signal.SIGTERM)  # a second signal during the save.
  process.wait(timeout=60)
  stderr = _log(process)
  assert process.returncode == 0, stderr[-3000:]
  assert time.time() - sent < 60
  stopped = _train_rows(model_dir)[-1]['step']
  assert _checkpoint_steps(model_dir)[-1] == stopped
  assert 'Preempted: saved the checkpoint at step' in stderr

  # In-process (the SIGKILL test re-runs the CLI), with SIGTERM during the final
  # evaluation: the run returns after its first batch; the next one evaluates.
  eval_loss = trainer_lib.Trainer.eval_loss

  def eval_loss_then_sigterm(self, *args):
    assert callable(signal.getsignal(signal.SIGTERM))  # the run's handler, not the default
    signal.raise_signal(signal.SIGTERM)
    return eval_loss(self, *args)

  monkeypatch.setattr(trainer_lib.Trainer, 'eval_loss', eval_loss_then_sigterm)
  final = [f'TRAIN_STEPS = {stopped + 2}', 'LM_EVAL_BATCHES = 2']
  assert _train(model_dir, *final) == []
  monkeypatch.undo()
  assert [r['step'] for r in _train_rows(model_dir)][-2:] == [stopped + 1, stopped + 2]
  assert _checkpoint_steps(model_dir)[-1] == stopped + 2
  assert not [r for r in metrics_lib.read(model_dir) if r['kind'] == 'eval']
  rows = _train(model_dir, *final)
  assert [r['step'] for r in metrics_lib.read(model_dir) if r['kind'] == 'eval'] == [stopped + 2]
  assert rows[0]['num_tokens'] > 0


def test_a_failed_async_save_is_raised_naming_the_step(tmp_path):
  manager = checkpoints.create_manager(str(tmp_path), 1)
  state = {'w': jax.numpy.ones(3)}
  assert checkpoints.save(manager, 1, state, {'unserializable': {1, 2}})  # fails in the background
  with pytest.raises(checkpoints.CheckpointError,
                     match=r'saving the checkpoint at step 1 in .* failed: TypeError'):
    checkpoints.finish(manager)
  assert checkpoints.save(manager, 2, state, {'batches': {'lm': 1}})
  checkpoints.finish(manager)
  assert manager.all_steps() == [2]


# --- In-process runs (no interpreter start-up per run) ---------------------


def _train(model_dir, *bindings):
  gin.clear_config(clear_constants=True)
  gin_utils.parse(['gin/base.gin'], TINY + [f'MODEL_DIR = {str(model_dir)!r}', *bindings])
  try:
    return runner.train()
  finally:
    gin.clear_config(clear_constants=True)


@pytest.fixture(scope='module')
def four_steps(tmp_path_factory):
  """A model_dir with checkpoints at steps 2 and 4."""
  model_dir = tmp_path_factory.mktemp('four') / 'model'
  _train(model_dir, 'TRAIN_STEPS = 4', 'CHECKPOINT_EVERY = 2')
  return model_dir


def _copy(model_dir, tmp_path):
  copy = tmp_path / 'copy'
  shutil.copytree(model_dir, copy)
  return copy


def _damage(step_dir):
  for root, _, files in os.walk(step_dir / 'state'):
    for name in files:
      with open(os.path.join(root, name), 'wb') as f:
        f.write(b'garbage')


def test_damaged_newest_checkpoint_falls_back_to_the_previous(four_steps, tmp_path, caplog):
  model_dir = _copy(four_steps, tmp_path)
  _damage(model_dir / 'checkpoints' / '4')
  rows_before = len(_train_rows(model_dir))
  _train(model_dir, 'TRAIN_STEPS = 6', 'CHECKPOINT_EVERY = 2')
  assert [r['step'] for r in _train_rows(model_dir)[rows_before:]] == [3, 4, 5, 6]
  assert os.listdir(model_dir / 'corrupt_checkpoints')[0].startswith('4.')
  assert any('checkpoints/4 failed to restore' in r.getMessage() for r in caplog.records)


def test_every_checkpoint_damaged_stops_naming_them(four_steps, tmp_path):
  model_dir = _copy(four_steps, tmp_path)
  for step in _checkpoint_steps(model_dir):
    _damage(model_dir / 'checkpoints' / str(step))
  steps = _checkpoint_steps(model_dir)
  with pytest.raises(checkpoints.CheckpointError, match='no checkpoint restores: .*/4, '):
    _train(model_dir, 'TRAIN_STEPS = 6', 'CHECKPOINT_EVERY = 2')
  assert _checkpoint_steps(model_dir) == steps  # nothing moved, nothing trained.


def test_config_checkpoint_mismatch_names_the_shapes(four_steps, tmp_path):
  model_dir = _copy(four_steps, tmp_path)
  config = (model_dir / 'config.gin').read_text()
  with pytest.raises(checkpoints.CheckpointError,
                     match=r'does not match the config: params/.*\(.*32.*\) in the checkpoint, '
                           r'\(.*48.*\) in the config'):
    _train(model_dir, 'TRAIN_STEPS = 6', 'network.ModelConfig.d_model = 48')
  assert (model_dir / 'config.gin').read_text() == config  # nothing overwritten.


def test_nonfinite_loss_stops_before_checkpointing_then_resume_is_finite(four_steps, tmp_path):
  model_dir = _copy(four_steps, tmp_path)
  with pytest.raises(trainer_lib.NonFiniteError,
                     match=r'non-finite .* at step 5 \(lm objective'):
    _train(model_dir, 'TRAIN_STEPS = 10', 'CHECKPOINT_EVERY = 2', 'LEARNING_RATE = 1e30')
  assert _checkpoint_steps(model_dir)[-1] == 4
  rows_before = len(_train_rows(model_dir))
  _train(model_dir, 'TRAIN_STEPS = 6', 'CHECKPOINT_EVERY = 2')
  resumed = _train_rows(model_dir)[rows_before:]
  assert [r['step'] for r in resumed] == [5, 6]
  assert all(np.isfinite(r['loss']) for r in resumed)


def test_skip_nonfinite_skips_and_counts_the_steps(four_steps, tmp_path):
  model_dir = _copy(four_steps, tmp_path)
  rows_before = len(_train_rows(model_dir))
  _train(model_dir, 'TRAIN_STEPS = 8', 'CHECKPOINT_EVERY = 2', 'LEARNING_RATE = 1e30',
         'train_lib.train.skip_nonfinite = True')
  rows = _train_rows(model_dir)[rows_before:]
  assert [r['step'] for r in rows] == [5, 6, 7, 8]
  assert sum(r.get('skipped_steps', 0) for r in rows) == 4
  assert _checkpoint_steps(model_dir)[-1] == 8  # holds step 4's (finite) weights.


def test_unwritable_model_dir_is_one_clear_error(tmp_path):
  (tmp_path / 'file').write_text('not a directory')
  with pytest.raises(checkpoints.CheckpointError,
                     match=r"MODEL_DIR='.*/file/model' is not writable \(Not a directory\)"):
    _train(tmp_path / 'file' / 'model', 'TRAIN_STEPS = 2')


def test_out_of_memory_names_the_config_and_the_planning_command():
  from freelm_jax.core import network, objectives, partitioning  # pylint: disable=g-import-not-at-top
  optimizer, schedule = trainer_lib.create_optimizer(1e-3, 10)
  config = network.ModelConfig(vocab_size=64, num_layers=1, d_model=32, num_heads=2,
                               max_len=16)
  trainer = trainer_lib.Trainer(
      network.FreeLM(config), optimizer, schedule, {'lm': objectives.LanguageObjective()},
      partitioning.create_mesh(1, 1, 1, devices=jax.devices()[:1]))

  def out_of_memory(state, batch):
    raise jax.errors.JaxRuntimeError('RESOURCE_EXHAUSTED: Out of memory allocating 9e12 bytes.')

  trainer._steps['lm'] = out_of_memory  # pylint: disable=protected-access
  batch = {'tokens': np.zeros((4, 16), np.int32)}
  with pytest.raises(trainer_lib.OutOfMemoryError,
                     match=r'out of memory in the lm step of the model \(num_layers=1, '
                           r'd_model=32.*tokens \(4, 16\).*python -m freelm_jax.plan'):
    trainer.train_step(None, batch, 'lm')
