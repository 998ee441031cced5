"""The paper-recipe rehearsal (gin/rehearsal/paper_cpu.gin, on gin/paper.gin)
at its smallest: trains a few parity steps with GPT-2's BPE and the local GLUE
mixture, then prints the paper-protocol GLUE table (gin/eval/glue_paper.gin)."""

import json
import pathlib
import subprocess
import sys

import pytest

REPO = pathlib.Path(__file__).resolve().parents[1]
SHARED_GLUE = REPO.parent / 'shared' / 'data' / 'glue'
METRICS = {'cola': ['matthews'], 'qqp': ['f1'], 'mrpc': ['f1'], 'stsb': ['pearson', 'spearman']}


def _tail(result) -> str:
  return '\n'.join(l for l in result.stderr.splitlines() if 'cuInit' not in l)[-3000:]


def _cli(*args):
  return subprocess.run([sys.executable, *args], cwd=REPO, capture_output=True, text=True,
                        timeout=600)


@pytest.fixture
def small_glue(tmp_path):
  """The first 12 rows of every ../shared GLUE file."""
  if not SHARED_GLUE.is_dir():
    pytest.skip('../shared/data/glue is absent')
  for path in SHARED_GLUE.glob('*.jsonl'):
    with open(path) as f:
      (tmp_path / path.name).write_text(''.join(f.readline() for _ in range(12)))
  return tmp_path


def test_rehearsal_trains_with_gpt2_bpe_and_prints_the_paper_glue_table(small_glue, tmp_path):
  model_dir = tmp_path / 'run'
  train = _cli('-m', 'freelm_jax.train', '--gin_file=gin/rehearsal/paper_cpu.gin',
               f"--gin.GLUE_DIR='{small_glue}'", f'--model_dir={model_dir}',
               '--gin.TRAIN_STEPS=2', '--gin.LM_BATCH_SIZE=8', '--gin.TEACHER_BATCH_SIZE=8',
               '--gin.LM_SEQ_LEN=64', '--gin.TEACHER_SEQ_LEN=64',
               '--gin_bindings=network.ModelConfig.num_layers=1',
               '--gin_bindings=network.ModelConfig.max_len=64',
               # Not checked here (lm_eval_test checks it); the eval CLI inherits it.
               '--gin_bindings=train_lib.DataConfig.eval_probe=False')
  assert train.returncode == 0, _tail(train)
  config = (model_dir / 'config.gin').read_text()
  assert 'vocabulary.gpt2_dir()' in config and 'vocab_size = %VOCAB_SIZE' in config
  assert "'opinions/lm.train.jsonl.gz'" in config
  # gin/paper.gin's vocabulary, padding and schedule; random initial weights.
  assert 'VOCAB_SIZE = 50260' in config and 'vocab_pad_multiple = 128' in config
  assert 'INIT_FROM = None' in config and "OBJECTIVE_SCHEDULE = 'parity'" in config
  rows = [json.loads(l) for l in open(model_dir / 'metrics.jsonl')]
  assert {r['objective'] for r in rows if r['kind'] == 'train'} == {'lm', 'teacher'}

  result = _cli('-m', 'freelm_jax.eval', f'--model_dir={model_dir}',
                '--gin_file=gin/eval/glue_paper.gin',
                '--gin_bindings=train_lib.DataConfig.eval_max_examples=4')
  assert result.returncode == 0, _tail(result)
  header = next(l for l in result.stdout.splitlines() if l.startswith('task'))
  for column in ('accuracy', 'f1', 'matthews', 'pearson', 'spearman'):
    assert column in header.split()
  evals = {r['task']: r for r in map(json.loads, open(model_dir / 'metrics.jsonl'))
           if r['kind'] == 'eval' and r['split'] == 'paper1k'}
  local = sorted(p.name.split('.')[0] for p in SHARED_GLUE.glob('*.paper1k.jsonl'))
  assert sorted(evals) == [f'glue_local_{t}' for t in local]
  for task in local:
    row = evals[f'glue_local_{task}']
    assert f'glue_local_{task}' in result.stdout and row['num_examples'] == 4
    for metric in ['accuracy'] + METRICS.get(task, []):
      assert isinstance(row[metric], float), (task, metric, row)
