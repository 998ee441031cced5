"""Every evaluation reports the held-out LM loss and perplexity (any data layer)."""

import math

import gin
import numpy as np

from freelm_jax.config import gin_utils
from freelm_jax.config import settings
from freelm_jax.training import evaluation
from freelm_jax.training import metrics as metrics_lib
from freelm_jax.training import runner

# A tiny model and few examples of the first two tasks gin/base.gin's data
# layer evaluates (whichever they are; each task's probe is fitted on its whole
# train split, so fewer tasks is most of this test's time).
TINY = [
    'network.ModelConfig.num_layers = 1', 'network.ModelConfig.d_model = 32',
    'network.ModelConfig.num_heads = 2', 'LM_BATCH_SIZE = 8', 'TEACHER_BATCH_SIZE = 8',
    'LM_SEQ_LEN = 32', 'TEACHER_SEQ_LEN = 32', 'WARMUP_STEPS = 2',
    'CHECKPOINT_EVERY = 4', 'train_lib.train.log_every = 1',
    'train_lib.DataConfig.eval_max_examples = 4', 'LM_EVAL_BATCHES = 2',
]


def _first_two_eval_tasks() -> str:
  gin.clear_config(clear_constants=True)
  try:
    gin_utils.parse(['gin/base.gin'], [])
    return f'train_lib.DataConfig.eval_tasks = {list(settings.DataConfig().eval_tasks[:2])!r}'
  finally:
    gin.clear_config(clear_constants=True)


def test_lm_loss_at_every_evaluation(tmp_path):
  model_dir = tmp_path / 'model'
  two_tasks = _first_two_eval_tasks()
  gin_utils.parse(['gin/base.gin'], TINY + [
      two_tasks, 'TRAIN_STEPS = 4', 'EVAL_EVERY = 2', f'MODEL_DIR = {str(model_dir)!r}'])
  data = settings.DataConfig()
  try:
    final = runner.train()
  finally:
    gin.clear_config(clear_constants=True)
  rows = [r for r in metrics_lib.read(model_dir) if r['kind'] == 'eval' and 'lm_loss' in r]
  assert [(r['step'], r['task'], r['split']) for r in rows] == [
      (2, data.lm_task, data.eval_split), (4, data.lm_task, data.eval_split)]
  for row in rows:
    assert 0 < row['lm_loss'] < 20 and 0 < row['num_tokens'] <= 2 * 8 * 32
    assert math.isclose(row['perplexity'], math.exp(row['lm_loss']), rel_tol=1e-9)
  assert rows[1]['lm_loss'] < rows[0]['lm_loss']  # the LM steps lower it
  assert final[0] == {k: v for k, v in rows[1].items() if k not in ('step', 'kind')}
  assert len(final) == 1 + len(data.eval_tasks)
  # The data layer's bag-of-words probe (the other end-to-end tests turn it off).
  assert data.eval_probe and any(r.get('probe_accuracy') is not None for r in final[1:])
  table = evaluation.format_table(final)
  assert 'perplexity' in table and data.lm_task in table


def test_table_of_lm_rows_only():
  table = evaluation.format_table([{'task': 'x_lm', 'split': 'validation', 'lm_loss': 2.0,
                                    'perplexity': float(np.exp(2.0)), 'num_tokens': 10}])
  assert 'accuracy' not in table and '7.3891' in table
