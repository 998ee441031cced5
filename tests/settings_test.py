"""Settings are checked before any work: a value out of range is one line
naming the setting as the user set it, and nothing is written. Any other error
keeps its traceback, as every error does with --debug."""

import os
import subprocess
import sys
import time

from absl import flags
from absl.testing import flagsaver
import gin
import pytest

from freelm_jax import cli
from freelm_jax.common import errors
from freelm_jax.config import gin_utils
from freelm_jax.config import settings
from freelm_jax.core import checkpoints
from freelm_jax.training import runner

REPO = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
BASE = os.path.join(REPO, 'gin', 'base.gin')
CONTEXT = "must be at most the model's context, network.ModelConfig.max_len=128."

# (binding on gin/base.gin, the error line, whether plan and bench read it)
CASES = [
    ('TRAIN_STEPS = -5', 'TRAIN_STEPS=-5: must be at least 1.', False),
    ('TRAIN_STEPS = 0', 'TRAIN_STEPS=0: must be at least 1.', False),
    ('TRAIN_STEPS = 2.5', 'TRAIN_STEPS=2.5: must be a whole number, at least 1.', False),
    ('LEARNING_RATE = -1.0', 'LEARNING_RATE=-1.0: must be above 0.', True),
    ('LEARNING_RATE = 0', 'LEARNING_RATE=0: must be above 0.', True),
    ('LEARNING_RATE = 1e999', 'LEARNING_RATE=inf: must be a finite number above 0.', True),
    ('WARMUP_STEPS = -1', 'WARMUP_STEPS=-1: must be at least 0.', True),
    ('END_LEARNING_RATE_RATIO = 1.5',
     'END_LEARNING_RATE_RATIO=1.5: must be between 0 and 1.', True),
    ('trainer.create_optimizer.weight_decay = -0.01',
     'trainer.create_optimizer.weight_decay=-0.01: must be at least 0.', True),
    ('trainer.create_optimizer.grad_clip_norm = 0.0',
     'trainer.create_optimizer.grad_clip_norm=0.0: must be above 0.', True),
    ('LM_BATCH_SIZE = 0', 'LM_BATCH_SIZE=0: must be at least 1.', True),
    ('TEACHER_BATCH_SIZE = -8', 'TEACHER_BATCH_SIZE=-8: must be at least 1.', True),
    ('train_lib.DataConfig.eval_batch_size = 0',
     'train_lib.DataConfig.eval_batch_size=0: must be at least 1.', True),
    ('LM_SEQ_LEN = 1',
     'LM_SEQ_LEN=1: must be at least 2 (a token and the next one to predict).', True),
    ('LM_SEQ_LEN = 129', f'LM_SEQ_LEN=129: {CONTEXT}', True),
    ('TEACHER_SEQ_LEN = 3', 'TEACHER_SEQ_LEN=3: must be at least 4 ([sep], [cls] and a '
     'token each of the instance and the proposition).', True),
    ('TEACHER_SEQ_LEN = 129', f'TEACHER_SEQ_LEN=129: {CONTEXT}', True),
    # Room for [sep] and [cls] but not for the shortest proposition and an instance.
    ('TEACHER_SEQ_LEN = 8', "TEACHER_SEQ_LEN=8: must be at least 11: [sep], [cls], the "
     "shortest proposition of task 'opinions_genre' (8 tokens) and a token of the "
     'instance.', False),
    ('TEACHER_PACK_LEN = 40', 'TEACHER_PACK_LEN=40: must be 0 (one proposition per row) or '
     'at least TEACHER_SEQ_LEN=48.', True),
    ('TEACHER_PACK_LEN = 256', f'TEACHER_PACK_LEN=256: {CONTEXT}', True),
    ('EMA_DECAY = 1.0', 'EMA_DECAY=1.0: must be at least 0 (no average) and below 1.', True),
    ("train_lib.train.learning_rate_scales = {'teach': 2.0}",
     "train_lib.train.learning_rate_scales={'teach': 2.0}: names objective 'teach'; the "
     'objectives are lm, teacher.', False),
    ("train_lib.train.learning_rate_scales = {'teacher': 0}",
     "train_lib.train.learning_rate_scales={'teacher': 0}: must map each objective to a "
     "number above 0 ('teacher': 0).", False),
    ('CHECKPOINT_EVERY = 0',
     'CHECKPOINT_EVERY=0: must be at least 1 (the last step is always saved).', False),
    ('EVAL_EVERY = -1',
     'EVAL_EVERY=-1: must be at least 0 (0: only the final evaluation).', False),
    ('train_lib.train.log_every = 0', 'train_lib.train.log_every=0: must be at least 1.',
     False),
    ('LM_EVAL_BATCHES = -1', 'LM_EVAL_BATCHES=-1: must be at least 0.', True),
    ('DATA_PARALLELISM = 0',
     'DATA_PARALLELISM=0: must be -1 (the remaining devices) or at least 1.', True),
    ('TENSOR_PARALLELISM = -2',
     'TENSOR_PARALLELISM=-2: must be -1 (the remaining devices) or at least 1.', True),
    ('FSDP_PARALLELISM = -1', 'FSDP_PARALLELISM=-1: only one mesh size may be -1 (the '
     'remaining devices), and DATA_PARALLELISM=-1 is.', True),
    ('network.ModelConfig.num_layers = 0',
     'network.ModelConfig.num_layers=0: must be at least 1.', True),
    ('network.ModelConfig.num_heads = 3', 'network.ModelConfig.num_heads=3: must divide '
     'network.ModelConfig.d_model=128.', True),
    ('network.ModelConfig.max_len = 0', 'network.ModelConfig.max_len=0: must be at least 1.',
     True),
    ('VOCAB_SIZE = 0', 'VOCAB_SIZE=0: must be at least 1.', True),
    ("network.ModelConfig.dtype = 'float64'", "network.ModelConfig.dtype='float64': must be "
     "one of 'float32', 'bfloat16', 'float16'.", True),
    ('models.LanguageObjective.logits_chunk = 48', 'models.LanguageObjective.logits_chunk=48: '
     'must divide LM_SEQ_LEN=64.', True),
]


@pytest.fixture
def fresh_gin():
  gin.clear_config(clear_constants=True)
  yield
  gin.clear_config(clear_constants=True)


@pytest.fixture
def no_work(monkeypatch):
  """Fails the test where the run gets as far as creating its model_dir."""
  def work_started(model_dir):
    raise AssertionError(f'settings not checked before the run began in {model_dir}')
  monkeypatch.setattr(checkpoints, 'check_writable', work_started)


def _train(bindings, model_dir) -> None:
  """What the train CLI runs once its flags are read."""
  gin.clear_config(clear_constants=True)
  cli.run_or_exit(lambda: (
      gin_utils.parse([BASE], [*bindings, f'MODEL_DIR = {str(model_dir)!r}']),
      runner.train()))


@pytest.mark.parametrize('binding, line', [c[:2] for c in CASES], ids=[c[0] for c in CASES])
def test_a_setting_out_of_range_is_one_line_before_any_work(tmp_path, fresh_gin, no_work,
                                                            binding, line):
  model_dir = tmp_path / 'model'
  with pytest.raises(SystemExit) as exit_info:
    _train([binding], model_dir)
  assert exit_info.value.code == f'error: {line}'
  assert not model_dir.exists()


@pytest.mark.parametrize('binding, line', [c[:2] for c in CASES if c[2]],
                         ids=[c[0] for c in CASES if c[2]])
def test_plan_and_bench_check_the_settings_they_read(monkeypatch, fresh_gin, binding, line):
  monkeypatch.setitem(sys.modules, 'tasks', None)  # as plan does; restored after
  with pytest.raises(SystemExit) as exit_info:
    cli.run_or_exit(lambda: runner.trainer_without_data([BASE], [binding]))
  assert exit_info.value.code == f'error: {line}'


def test_the_name_is_the_macro_the_user_set_through_other_macros(tmp_path, fresh_gin):
  (tmp_path / 'exp.gin').write_text(f"include '{BASE}'\nBATCH = 16\nLM_BATCH_SIZE = %BATCH\n")
  with pytest.raises(SystemExit) as exit_info:
    cli.run_or_exit(lambda: (
        gin_utils.parse([str(tmp_path / 'exp.gin')], ['BATCH = 0']), settings.DataConfig()))
  assert exit_info.value.code == 'error: BATCH=0: must be at least 1.'


@pytest.mark.parametrize('error', [ValueError('operands could not be broadcast together'),
                                   OSError(5, 'Input/output error')])
def test_an_unexpected_error_keeps_its_traceback(tmp_path, fresh_gin, monkeypatch, error):
  def internal_bug(*args, **kwargs):
    raise error
  monkeypatch.setattr(settings, 'build_trainer', internal_bug)
  with pytest.raises(type(error)) as raised:  # not SystemExit: the traceback is printed
    _train([], tmp_path / 'model')
  assert cli.user_error_line(raised.value) is None


@pytest.fixture
def debug_flag(monkeypatch):
  """The --debug flag; run_or_exit passes it on to workers as FREELM_DEBUG."""
  if 'debug' not in flags.FLAGS:  # no command module was imported in this process
    cli.define_flags()
  monkeypatch.setenv('FREELM_DEBUG', '0')  # restored after the test


def test_debug_keeps_the_traceback_of_a_user_error_too(tmp_path, fresh_gin, no_work,
                                                       debug_flag, monkeypatch):
  with flagsaver.flagsaver(debug=True), pytest.raises(errors.SettingError) as raised:
    _train(['TRAIN_STEPS = -5'], tmp_path / 'model')
  assert cli.user_error_line(raised.value) == 'TRAIN_STEPS=-5: must be at least 1.'
  monkeypatch.setenv('FREELM_DEBUG', '1')
  with pytest.raises(errors.SettingError):
    _train(['TRAIN_STEPS = -5'], tmp_path / 'model')
  assert not (tmp_path / 'model').exists()


def test_errors_wrapped_by_gin_and_tf_data_are_told_by_type():
  @gin.configurable('settings_test_fn')
  def fn(value=1):
    raise errors.DataError(f'data.jsonl:{value}: malformed JSON.')

  with pytest.raises(errors.DataError) as raised:
    fn()  # pylint: disable=no-value-for-parameter
  assert 'In call to configurable' in str(raised.value)
  assert cli.user_error_line(raised.value) == 'data.jsonl:1: malformed JSON.'
  tf_error = type('InvalidArgumentError', (Exception,), {'__module__': 'tensorflow.errors'})
  wrapped = tf_error('Error in user-defined function: DataError: a.jsonl:2: bad.\nTraceback')
  assert cli.user_error_line(wrapped) == 'a.jsonl:2: bad.'
  assert cli.user_error_line(tf_error('Error: ValueError: shape')) is None


def test_train_cli_stops_on_a_bad_setting_in_one_line(tmp_path):
  model_dir = tmp_path / 'model'
  start = time.monotonic()
  result = subprocess.run(
      [sys.executable, '-m', 'freelm_jax.train', f'--gin_file={BASE}',
       '--gin.TRAIN_STEPS=-5', f'--model_dir={model_dir}'],
      cwd=REPO, capture_output=True, text=True, timeout=300)
  assert result.returncode == 1
  assert result.stderr.splitlines() == ['error: TRAIN_STEPS=-5: must be at least 1.']
  assert 'In call to configurable' not in result.stderr
  assert not model_dir.exists()
  assert time.monotonic() - start < 120  # the imports, not a run
