"""gin/paper.gin, the paper experiment: its own values, none from the laptop
demo; GPT-2 medium's shape in bf16 with remat; INIT_FROM required, with a
one-line error. Parses only (nothing compiles); no TensorFlow."""

import os
import re
import sys

import gin
import pytest

from freelm_jax.config import gin_utils
from freelm_jax.config import settings
from freelm_jax.training import runner

REPO = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
WEIGHTS = "INIT_FROM = '/models/gpt2-medium'"
DEMO_FILES = {'gin/base.gin', 'gin/models/demo.gin', 'gin/models/tiny.gin',
              'gin/data/opinions.gin'}
# Set by the run layer or the data layer; the experiment must choose each itself.
EXPERIMENT_MACROS = {
    'TRAIN_STEPS', 'LEARNING_RATE', 'WARMUP_STEPS', 'END_LEARNING_RATE_RATIO',
    'LM_BATCH_SIZE', 'TEACHER_BATCH_SIZE', 'LM_SEQ_LEN', 'TEACHER_SEQ_LEN',
    'CHECKPOINT_EVERY', 'EVAL_EVERY', 'LM_EVAL_BATCHES', 'MODEL_DIR', 'OBJECTIVE_SCHEDULE',
    'SEED', 'DATA_PARALLELISM', 'FSDP_PARALLELISM', 'TENSOR_PARALLELISM', 'INIT_FROM'}
SAME_AS_DEMO = {'OBJECTIVE_SCHEDULE'}  # both alternate the two signals


@pytest.fixture(autouse=True)
def no_tasks(monkeypatch):
  """gin's `import tasks` is skipped (as plan.py does): no TensorFlow."""
  monkeypatch.setitem(sys.modules, 'tasks', None)
  gin.clear_config(clear_constants=True)
  yield
  gin.clear_config(clear_constants=True)


def _parse(files, bindings=()):
  gin_utils.parse(files, list(bindings), skip_failed_imports=True)
  return [os.path.relpath(f, REPO) for f in gin_utils.parsed_files()]


def _macros_set_in(path) -> set[str]:
  with open(os.path.join(REPO, path)) as f:
    return set(re.findall(r'^([A-Z][A-Z0-9_]*)\s*=', f.read(), re.MULTILINE))


def _macro_values(names) -> dict:
  return {name: gin.query_parameter(f'%{name}') for name in names}


def test_paper_reads_no_demo_file():
  parsed = _parse(['gin/paper.gin'], [WEIGHTS])
  assert parsed[0] == 'gin/paper.gin'
  assert {'gin/runs/pretrain.gin', 'gin/models/freelm_0.3b.gin', 'gin/data/paper.gin'} <= set(
      parsed)
  assert not DEMO_FILES & set(parsed)


def test_paper_sets_every_experiment_value_itself_none_equal_to_the_demos():
  base_macros = _macros_set_in('gin/base.gin')
  assert {'TRAIN_STEPS', 'LEARNING_RATE', 'CHECKPOINT_EVERY'} <= base_macros
  # Set in gin/paper.gin's own text: none is inherited from the layers.
  assert (base_macros | EXPERIMENT_MACROS) - _macros_set_in('gin/paper.gin') == set()
  _parse(['gin/base.gin'])
  demo = _macro_values(base_macros)
  gin.clear_config(clear_constants=True)
  _parse(['gin/paper.gin'], [WEIGHTS])
  paper = _macro_values(base_macros)
  assert {m for m in base_macros if paper[m] == demo[m]} == SAME_AS_DEMO
  assert paper['TRAIN_STEPS'] > demo['TRAIN_STEPS']
  assert paper['END_LEARNING_RATE_RATIO'] < 1.0  # decays, where the demo's is constant


def test_paper_model_is_gpt2_medium_in_bf16_with_remat():
  _parse(['gin/paper.gin'], [WEIGHTS])
  model = settings.ModelConfig()
  assert (model.num_layers, model.d_model, model.num_heads, model.max_len) == (24, 1024, 16, 1024)
  assert model.dtype == 'bfloat16' and model.remat_policy != 'none'
  # GPT-2's 50257 tokens + [sep] [cls] [pad]; the padded rows are masked.
  assert model.vocab_size == 50257 + 3 and model.padded_vocab_size % 128 == 0
  data = settings.DataConfig()
  assert data.lm_seq_len == model.max_len and data.teacher_seq_len <= model.max_len
  assert gin.query_parameter('%INIT_FROM') == '/models/gpt2-medium'


def test_missing_init_from_is_one_line_saying_how_to_get_the_weights():
  with pytest.raises(gin_utils.ConfigError) as error:
    _parse(['gin/paper.gin'])
  message = str(error.value)
  assert '\n' not in message and 'In call to' not in message
  assert re.match(r'INIT_FROM is required by gin/paper\.gin:\d+: ', message), message
  assert 'hf download openai-community/gpt2-medium' in message
  assert '''--gin.INIT_FROM="'/models/gpt2-medium'"''' in message


def test_planning_needs_no_weights():
  model, data, trainer, _ = runner.trainer_without_data(['gin/paper.gin'], [])
  assert gin.query_parameter('%INIT_FROM') is None
  assert model.num_layers == 24 and data.lm_batch_size == 256
  assert dict(trainer.mesh.shape)['fsdp'] == len(trainer.mesh.devices.flat)


def test_cpu_rehearsal_layers_on_the_paper_experiment():
  parsed = _parse(['gin/rehearsal/paper_cpu.gin'], ["GLUE_DIR = '/tmp/glue'"])
  assert 'gin/paper.gin' in parsed and not {'gin/base.gin', 'gin/data/opinions.gin'} & set(
      parsed)
  assert gin.query_parameter('%INIT_FROM') is None  # random weights
  assert settings.ModelConfig().num_layers < 24
