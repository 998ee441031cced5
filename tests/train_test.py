"""A tiny end-to-end run: train, evaluate, resume; and the CLIs' errors."""

import json
import os
import shutil
import subprocess
import sys

import gin
import numpy as np
import pytest

from freelm_jax import cli
from freelm_jax.config import gin_utils
from freelm_jax.training import metrics as metrics_lib
from freelm_jax.training import runner

REPO = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
TINY = [
    'network.ModelConfig.num_layers = 1', 'network.ModelConfig.d_model = 32',
    'network.ModelConfig.num_heads = 2', 'LM_BATCH_SIZE = 8', 'TEACHER_BATCH_SIZE = 8',
    'LM_SEQ_LEN = 32', 'TEACHER_SEQ_LEN = 24', 'WARMUP_STEPS = 2',
    'CHECKPOINT_EVERY = 4', 'train_lib.train.log_every = 1',  # and at the last step
    "train_lib.DataConfig.eval_tasks = ['opinions_tweet_sentiment', 'opinions_party']",
    'train_lib.DataConfig.eval_probe = False',  # lm_eval_test checks the probe
    'LM_EVAL_BATCHES = 0',  # and the held-out LM loss; the eval CLI inherits it
]


def _train(model_dir, *bindings):
  gin.clear_config(clear_constants=True)
  gin_utils.parse(['gin/base.gin'], TINY + [f'MODEL_DIR = {str(model_dir)!r}', *bindings])
  try:
    return runner.train()
  finally:
    gin.clear_config(clear_constants=True)


def _train_rows(model_dir):
  return [r for r in metrics_lib.read(model_dir) if r['kind'] == 'train']


@pytest.fixture(scope='module')
def trained(tmp_path_factory):
  model_dir = tmp_path_factory.mktemp('run') / 'model'
  rows = _train(model_dir, 'TRAIN_STEPS = 6')
  return model_dir, rows


def test_run_logs_both_objectives_checkpoints_and_config(trained):
  model_dir, eval_rows = trained
  train_rows = _train_rows(model_dir)
  assert [(r['step'], r['objective']) for r in train_rows] == [
      (s, 'lm' if s % 2 else 'teacher') for s in range(1, 7)]
  assert all(np.isfinite(r['loss']) for r in train_rows)
  assert all('accuracy' in r for r in train_rows if r['objective'] == 'teacher')
  assert sorted(os.listdir(model_dir / 'checkpoints'))[-1] == '6'
  assert "OBJECTIVE_SCHEDULE = 'parity'" in (model_dir / 'config.gin').read_text()
  eval_rows = [r for r in eval_rows if 'accuracy' in r]  # the teacher tasks'
  assert [r['task'] for r in eval_rows] == ['opinions_tweet_sentiment', 'opinions_party']
  assert [r['seen'] for r in eval_rows] == [True, False]
  assert eval_rows[0]['num_examples'] == 500  # every validation example scored
  assert all(0 <= r['accuracy'] <= 1 and r['baseline_accuracy'] is not None
             for r in eval_rows)
  assert os.listdir(model_dir / 'tensorboard')


def test_resume_continues_exactly_like_an_uninterrupted_run(trained, tmp_path):
  model_dir, _ = trained
  resumed = tmp_path / 'resumed'
  shutil.copytree(model_dir, resumed)
  shutil.rmtree(resumed / 'checkpoints' / '6')  # as if killed after step 4
  with open(resumed / 'metrics.jsonl', 'w') as f:
    f.writelines(json.dumps(r) + '\n' for r in _train_rows(model_dir)[:4])
  _train(resumed, 'TRAIN_STEPS = 6', 'train_lib.DataConfig.eval_tasks = []')  # losses only
  expected = {r['step']: r['loss'] for r in _train_rows(model_dir)}
  got = {r['step']: r['loss'] for r in _train_rows(resumed)}
  assert sorted(got) == [1, 2, 3, 4, 5, 6]
  for step in (5, 6):
    np.testing.assert_allclose(got[step], expected[step], rtol=1e-6)


def _cli(module, *args, cwd=REPO, env_extra=None):
  env = dict(os.environ, PYTHONPATH=os.pathsep.join([REPO, *(env_extra or [])]))
  return subprocess.run([sys.executable, '-m', module, *args], cwd=cwd, env=env,
                        capture_output=True, text=True, timeout=300)


def _last_line(result):
  return result.stderr.strip().splitlines()[-1]


def test_train_cli_bad_config_is_one_clear_line_and_writes_nothing(tmp_path):
  model_dir = tmp_path / 'model'
  result = _cli('freelm_jax.train', '--gin_file=gin/base.gin', f'--model_dir={model_dir}',
                '--gin.TRAIN_STEPZ=3')
  assert result.returncode == 1
  assert _last_line(result) == 'error: --gin.TRAIN_STEPZ: no gin file defines the macro TRAIN_STEPZ.'
  assert not model_dir.exists()


@pytest.mark.parametrize('files, bindings, expected', [
    (['gin/base.gin'], ['train_lib.train.stepz = 3'],
     'error: --gin_bindings=train_lib.train.stepz = 3:'),
    (['gin/nope.gin'], [], 'error: --gin_file=gin/nope.gin: no such file (shipped configs '),
    (['gin/base.gin'], ["OBJECTIVE_SCHEDULE = 'alternate'"],
     "error: OBJECTIVE_SCHEDULE='alternate' is not one of"),
    (['gin/base.gin'], ["train_lib.DataConfig.teacher_mixture = 'nope'"], 'nope'),
])
def test_bad_config_is_one_clear_error_and_writes_nothing(tmp_path, files, bindings, expected):
  """What the train CLI runs once its flags are read (the test above runs the CLI)."""
  model_dir = tmp_path / 'model'
  gin.clear_config(clear_constants=True)
  try:
    with pytest.raises(SystemExit) as exit_info:
      cli.run_or_exit(lambda: (
          gin_utils.parse(files, bindings + [f'MODEL_DIR = {str(model_dir)!r}']),
          runner.train()))
  finally:
    gin.clear_config(clear_constants=True)
  message = str(exit_info.value.code)
  assert len(message.splitlines()) == 1
  assert message.startswith(expected) or expected in message
  assert not model_dir.exists()


def test_eval_cli_scores_a_user_registered_task(trained, tmp_path):
  model_dir, _ = trained
  rows = [{'premise': f'Sentence number {i}.', 'hypothesis': 'A sentence.', 'label': i % 2}
          for i in range(7)]
  (tmp_path / 'data.jsonl').write_text(''.join(json.dumps(r) + '\n' for r in rows))
  (tmp_path / 'my_tasks.py').write_text(
      'import tasks\n'
      f'tasks.register("my_entail", source={{"validation": {str(tmp_path / "data.jsonl")!r}}},\n'
      '    instance="{premise}", propositions={0: "{hypothesis} follows.", 1: "{hypothesis} does not follow."},\n'
      '    label_field="label", task_type="my_nli")\n')
  result = _cli('freelm_jax.eval', f'--model_dir={model_dir}', '--module_import=my_tasks',
                '--tasks=my_entail', cwd=tmp_path, env_extra=[str(tmp_path)])
  assert result.returncode == 0, result.stderr[-2000:]
  assert 'my_entail' in result.stdout
  row = [r for r in metrics_lib.read(model_dir) if r.get('task') == 'my_entail'][-1]
  assert row['num_examples'] == 7 and row['seen'] is False and row['step'] == 6


def test_eval_cli_names_the_bad_line_of_a_user_task(trained, tmp_path):
  model_dir, _ = trained
  (tmp_path / 'bad.jsonl').write_text('{"premise": "a", "label": 0}\nnot json\n')
  (tmp_path / 'bad_tasks.py').write_text(
      'import tasks\n'
      f'tasks.register("bad_task", source={{"validation": {str(tmp_path / "bad.jsonl")!r}}},\n'
      '    instance="{premise}", propositions={0: "yes", 1: "no"}, label_field="label")\n')
  result = _cli('freelm_jax.eval', f'--model_dir={model_dir}', '--module_import=bad_tasks',
                '--tasks=bad_task', cwd=tmp_path, env_extra=[str(tmp_path)])
  assert result.returncode != 0
  assert _last_line(result) == f'error: {tmp_path / "bad.jsonl"}:2: malformed JSON (Expecting value).'
