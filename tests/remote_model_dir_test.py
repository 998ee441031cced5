"""A gs:// model_dir works like a local one (no network: a fake bucket).

`LocalBucketBackend` is etils.epath's backend for gs:// during these tests: it
keeps gs://BUCKET/PATH at <tmp>/bucket-root/BUCKET/PATH and, like an object
store, refuses to append. Orbax runs its own gs:// code path (commit_success
files instead of renames) through it; only TensorStore's GCS driver (array
bytes) and orbax's hierarchical-namespace query are pointed at the same local
folder. TensorBoard and the tf.data iterator snapshots (both written by
TensorFlow, which reaches GCS on its own) go to that folder too. The working
directory is checked afterwards: nothing may be written there as a local
`gs:/...` path.
"""

import os

from etils.epath import backend as backend_lib
from etils.epath import gpath
import gin
import jax
import numpy as np
from orbax.checkpoint._src.path import gcs_utils
import pytest

from freelm_jax.config import gin_utils
from freelm_jax.core import checkpoints
from freelm_jax.interop import weights
from freelm_jax.training import input_streams
from freelm_jax.training import metrics as metrics_lib
from freelm_jax.training import runner

TINY = [
    'network.ModelConfig.num_layers = 1', 'network.ModelConfig.d_model = 32',
    'network.ModelConfig.num_heads = 2', 'LM_BATCH_SIZE = 8', 'TEACHER_BATCH_SIZE = 8',
    'LM_SEQ_LEN = 32', 'TEACHER_SEQ_LEN = 24', 'WARMUP_STEPS = 2',
    'CHECKPOINT_EVERY = 4', 'train_lib.train.log_every = 1',  # and at the last step
    'train_lib.DataConfig.eval_tasks = []', 'LM_EVAL_BATCHES = 0',
]
RUN = 'gs://bucket/run'


class LocalBucketBackend(backend_lib.Backend):
  """gs://BUCKET/PATH kept at ROOT/BUCKET/PATH; appending fails as on GCS."""

  def __init__(self, root: str):
    self.root = root
    self.os = backend_lib.os_backend

  def local(self, path) -> str:
    path = os.fspath(path)
    assert path.startswith('gs://'), path
    return os.path.join(self.root, path[len('gs://'):])

  def remote(self, path: str) -> str:
    return 'gs://' + os.path.relpath(path, self.root)

  def open(self, path, mode):
    if 'a' in mode:
      raise OSError(f'{path}: an object store cannot append.')
    return self.os.open(self.local(path), mode)

  def exists(self, path):
    return self.os.exists(self.local(path))

  def isdir(self, path):
    return self.os.isdir(self.local(path))

  def listdir(self, path):
    return self.os.listdir(self.local(path))

  def glob(self, path):
    return [self.remote(p) for p in self.os.glob(self.local(path))]

  def walk(self, top, *, top_down=True, on_error=None):
    for root, dirs, files in self.os.walk(self.local(top), top_down=top_down,
                                          on_error=on_error):
      yield self.remote(root), dirs, files

  def makedirs(self, path, *, exist_ok=False, mode=None):
    self.os.makedirs(self.local(path), exist_ok=exist_ok)

  def mkdir(self, path, *, exist_ok=False, mode=None):
    self.os.mkdir(self.local(path), exist_ok=exist_ok)

  def rmtree(self, path):
    self.os.rmtree(self.local(path))

  def remove(self, path):
    self.os.remove(self.local(path))

  def rename(self, path, dst):
    self.os.rename(self.local(path), self.local(dst))

  def replace(self, path, dst):
    self.os.replace(self.local(path), self.local(dst))

  def copy(self, path, dst, overwrite):
    self.os.copy(self.local(path), self.local(dst), overwrite=overwrite)

  def stat(self, path):
    return self.os.stat(self.local(path))


@pytest.fixture
def bucket(tmp_path, monkeypatch):
  """The fake gs:// store; the test runs in an empty working directory."""
  fake = LocalBucketBackend(str(tmp_path / 'bucket-root'))
  os.makedirs(fake.local('gs://bucket'))
  # Else epath sends gs:// to tf.io.gfile. `_is_tf_installed` is cached at its
  # first call (any earlier test's), so EPATH_USE_TF alone comes too late.
  monkeypatch.setattr(gpath, '_is_tf_installed', lambda: False)  # pylint: disable=protected-access
  monkeypatch.setitem(gpath._PREFIX_TO_BACKEND, 'gs', fake)  # pylint: disable=protected-access
  monkeypatch.setattr(gcs_utils, 'get_kvstore_for_gcs',
                      lambda path: {'driver': 'file', 'path': fake.local(path)})
  monkeypatch.setattr(gcs_utils, 'is_hierarchical_namespace_enabled', lambda path: False)
  # TensorBoard events are written by TensorFlow, which reaches GCS on its own.
  create_writer = metrics_lib.metric_writers.create_default_writer
  monkeypatch.setattr(metrics_lib.metric_writers, 'create_default_writer',
                      lambda logdir, **k: create_writer(fake.local(logdir), **k))
  (tmp_path / 'cwd').mkdir()
  monkeypatch.chdir(tmp_path / 'cwd')
  yield fake
  assert not os.listdir(tmp_path / 'cwd'), 'a gs:// path was written as a local path'


def test_write_probe_creates_the_remote_dir_and_leaves_nothing(bucket):
  checkpoints.check_writable(RUN + '/new')
  assert os.listdir(bucket.local(RUN + '/new')) == []


def test_unwritable_remote_model_dir_is_one_clear_error(bucket, monkeypatch):
  class PermissionDeniedError(Exception):  # as TF's GCS errors: not an OSError
    pass

  def denied(path, mode):
    raise PermissionDeniedError(f'{path}: 403 storage.objects.create denied')

  monkeypatch.setattr(bucket, 'open', denied)
  with pytest.raises(checkpoints.CheckpointError,
                     match=r"MODEL_DIR='gs://bucket/run' is not writable \(.*403"):
    checkpoints.check_writable(RUN)


def test_remote_metrics_are_part_files_read_back_in_order(bucket):
  first = metrics_lib.MetricsWriter(RUN)
  first.write({'step': 1, 'kind': 'train', 'loss': 2.0})
  first.write({'step': 2, 'kind': 'train', 'loss': 1.5})
  first.close()
  second = metrics_lib.MetricsWriter(RUN)  # e.g. the resumed run
  second.write({'step': 3, 'kind': 'train', 'loss': 1.0})
  second.close()
  assert [r['step'] for r in metrics_lib.read(RUN)] == [1, 2, 3]
  assert len(os.listdir(bucket.local(RUN + '/metrics_parts'))) == 2
  assert not os.path.exists(bucket.local(RUN + '/metrics.jsonl'))


def test_local_metrics_stay_one_appended_file(tmp_path):
  for step in (1, 2):
    writer = metrics_lib.MetricsWriter(str(tmp_path))
    writer.write({'step': step, 'kind': 'train', 'loss': 1.0})
    writer.close()
  assert len((tmp_path / 'metrics.jsonl').read_text().splitlines()) == 2
  assert not (tmp_path / 'metrics_parts').exists()
  assert [r['step'] for r in metrics_lib.read(str(tmp_path))] == [1, 2]


def _save_steps(model_dir, steps):
  manager = checkpoints.create_manager(model_dir, 1)
  state = {'w': jax.numpy.arange(4.0)}
  for step in steps:
    checkpoints.save(manager, step, state, {'batches': {'lm': step}})
  checkpoints.finish(manager)
  manager.close()
  return state


def test_damaged_remote_checkpoint_is_moved_aside(bucket):
  state = _save_steps(RUN, [1, 2])
  for root, _, files in os.walk(bucket.local(RUN + '/checkpoints/2/state')):
    for name in files:
      with open(os.path.join(root, name), 'wb') as f:
        f.write(b'garbage')
  manager = checkpoints.create_manager(RUN, 1)
  abstract = jax.tree.map(lambda x: jax.ShapeDtypeStruct(x.shape, x.dtype,
                                                         sharding=x.sharding), state)
  restored, facts = checkpoints.restore_newest(manager, abstract, RUN)
  np.testing.assert_array_equal(restored['w'], state['w'])
  assert facts == {'batches': {'lm': 1}}
  assert manager.all_steps() == [1]
  moved = os.listdir(bucket.local(RUN + '/corrupt_checkpoints'))
  assert len(moved) == 1 and moved[0].startswith('2.')
  manager.close()


def _train(*bindings):
  gin.clear_config(clear_constants=True)
  gin_utils.parse(['gin/base.gin'], TINY + [f'MODEL_DIR = {RUN!r}', *bindings])
  try:
    return runner.train()
  finally:
    gin.clear_config(clear_constants=True)


def test_train_on_a_gs_model_dir_checkpoints_logs_and_resumes(bucket, monkeypatch):
  # The input workers snapshot their iterators with tf.io.gfile (GCS on its own).
  open_streams = input_streams.open_streams
  monkeypatch.setattr(input_streams, 'open_streams', lambda *a, **k: open_streams(
      *a[:6], bucket.local(a[6]), *a[7:], **k))

  _train('TRAIN_STEPS = 4')
  assert checkpoints.checkpoint_steps(RUN)[-1] == 4
  assert os.path.exists(bucket.local(RUN + '/checkpoints/4/commit_success.txt'))
  _train('TRAIN_STEPS = 6')  # resumes from step 4

  rows = [r for r in metrics_lib.read(RUN) if r['kind'] == 'train']
  assert [r['step'] for r in rows] == [1, 2, 3, 4, 5, 6]
  assert all(np.isfinite(r['loss']) for r in rows)
  assert len(os.listdir(bucket.local(RUN + '/metrics_parts'))) == 2
  assert checkpoints.checkpoint_steps(RUN)[-1] == 6
  loaded = weights.load(RUN)  # what Predictor.from_pretrained reads
  assert loaded.config.d_model == 32
  gin_utils.parse([RUN + '/config.gin'], [])  # what eval.py reads first
  try:
    assert gin.query_parameter('%MODEL_DIR') == RUN
  finally:
    gin.clear_config(clear_constants=True)
