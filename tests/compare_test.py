"""make compare (the schedule ablation) and the learning-curve plots."""

import json
import os
import subprocess
import sys

import gin
from matplotlib import image
import pytest

from freelm_jax import compare
from freelm_jax import gin_utils
from freelm_jax import plots
from freelm_jax import train_lib

REPO = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
TINY = [
    'network.ModelConfig.num_layers = 1', 'network.ModelConfig.d_model = 32',
    'network.ModelConfig.num_heads = 2', 'LM_BATCH_SIZE = 8', 'TEACHER_BATCH_SIZE = 8',
    'LM_SEQ_LEN = 32', 'TEACHER_SEQ_LEN = 32', 'WARMUP_STEPS = 1',
    'train_lib.DataConfig.eval_max_examples = 2', 'LM_EVAL_BATCHES = 1',
    'train_lib.DataConfig.eval_probe = False',  # lm_eval_test checks the probe
]


def _rows(schedule_offset: float, steps=(2, 4)) -> list[dict]:
  """Eval rows of a fake run: two trained tasks, one held out, the LM."""
  rows = [{'step': 1, 'kind': 'train', 'objective': 'lm', 'loss': 9.0}]
  for step in steps:
    acc = 0.5 + schedule_offset * step
    rows += [
        {'step': step, 'kind': 'eval', 'task': 'lm_task', 'split': 'validation',
         'lm_loss': 9.0 - step * 0.1, 'perplexity': 2.0 ** step, 'num_tokens': 10},
        {'step': step, 'kind': 'eval', 'task': 'a', 'accuracy': acc, 'trained': True},
        {'step': step, 'kind': 'eval', 'task': 'b_sst2', 'accuracy': acc + 0.1, 'trained': True},
        {'step': step, 'kind': 'eval', 'task': 'c', 'accuracy': 0.4, 'trained': False}]
  return rows


def _assert_png(path):
  with open(path, 'rb') as f:
    assert f.read(8) == b'\x89PNG\r\n\x1a\n'
  height, width, _ = image.imread(path).shape
  assert height > 100 and width > 300


def test_curves_and_table_from_rows(tmp_path):
  runs = {'parity': _rows(0.01), 'lm_only': _rows(0.0), 'teacher_only': _rows(0.02)}
  steps, values = plots.curves(runs['parity'])['trained']
  assert steps == [2, 4] and values == pytest.approx([0.57, 0.59])
  assert plots.curves(runs['parity'])['lm_loss'] == ([2, 4], pytest.approx([8.8, 8.6]))
  table = compare.table(runs).splitlines()
  assert [c.strip() for c in table[0].split('|')[1:-1]] == [
      'schedule', 'step', 'a', 'b_sst2', 'c (held out)', 'trained mean', 'LM perplexity']
  assert len(table) == 5 and table[2].startswith('| parity')
  assert [c.strip() for c in table[2].split('|')[2:-1]] == [
      '4', '0.540', '0.640', '0.400', '0.590', '16.000']  # the last evaluation's
  _assert_png(plots.draw(runs, str(tmp_path / 'out' / 'curves.png')))


def test_plots_cli_draws_model_dirs(tmp_path):
  for name, offset in (('a', 0.0), ('b', 0.02)):
    (tmp_path / name).mkdir()
    (tmp_path / name / 'metrics.jsonl').write_text(
        ''.join(json.dumps(r) + '\n' for r in _rows(offset)))
  out = tmp_path / 'curves.png'
  result = subprocess.run(
      [sys.executable, '-m', 'freelm_jax.plots', str(tmp_path / 'a'), str(tmp_path / 'b'),
       f'--output={out}'], cwd=REPO, capture_output=True, text=True, timeout=300)
  assert result.returncode == 0, result.stderr[-2000:]
  _assert_png(out)
  missing = subprocess.run(
      [sys.executable, '-m', 'freelm_jax.plots', str(tmp_path / 'nope')], cwd=REPO,
      capture_output=True, text=True, timeout=300)
  assert missing.returncode != 0 and missing.stderr.strip().splitlines()[-1].startswith(
      'error: ') and 'metrics.jsonl' in missing.stderr


def test_eval_every_defaults_to_a_fifth_of_the_steps():
  try:
    assert compare.run_bindings(['gin/base.gin'], ['TRAIN_STEPS = 50'])[-1] == 'EVAL_EVERY = 10'
    assert compare.run_bindings(['gin/base.gin'], ['TRAIN_STEPS = 50', 'EVAL_EVERY = 7']) == [
        'TRAIN_STEPS = 50', 'EVAL_EVERY = 7']
  finally:
    gin.clear_config(clear_constants=True)


def test_compare_trains_each_schedule_then_writes_table_and_curves(tmp_path):
  gin.clear_config(clear_constants=True)
  gin_utils.parse(['gin/base.gin'], [])
  eval_tasks = list(train_lib.DataConfig().eval_tasks)
  gin.clear_config(clear_constants=True)
  two_tasks = f'train_lib.DataConfig.eval_tasks = {[eval_tasks[0], eval_tasks[-1]]!r}'
  bindings = TINY + ['TRAIN_STEPS = 2', 'EVAL_EVERY = 2', two_tasks]
  dirs = compare.run_all(['gin/base.gin'], bindings, str(tmp_path))
  assert dirs == {s: str(tmp_path / s) for s in compare.SCHEDULES}
  md, png = compare.report(dirs, str(tmp_path))
  table = [l for l in open(md).read().splitlines() if l.startswith('|')]
  assert [l.split('|')[1].strip() for l in table[2:]] == list(compare.SCHEDULES)
  assert eval_tasks[0] in table[0] and eval_tasks[-1] in table[0] and 'perplexity' in table[0]
  _assert_png(png)
  for schedule in compare.SCHEDULES:  # each ran its schedule, evaluated at step 2
    assert f"OBJECTIVE_SCHEDULE = '{schedule}'" in open(
        os.path.join(dirs[schedule], 'config.gin')).read()
  mtime = os.path.getmtime(os.path.join(dirs['parity'], 'metrics.jsonl'))
  compare.run_all(['gin/base.gin'], bindings, str(tmp_path))  # all finished: nothing runs
  assert os.path.getmtime(os.path.join(dirs['parity'], 'metrics.jsonl')) == mtime
