"""`python -m freelm_jax.bench` (`make bench`): its JSON lines, without TensorFlow."""

import json
import os
import subprocess
import sys

from conftest import TEST_XLA_FLAGS

REPO = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
# Runs the benchmark CLI in-process, then reports whether TF or seqio was imported.
RUNNER = '''
import sys
from absl import app
from freelm_jax import bench
from freelm_jax import cli
try:
  app.run(bench.main, argv=cli.rewrite_gin_args(sys.argv))
except SystemExit as e:
  assert not e.code, e.code
print(json.dumps(sorted({m.split(".")[0] for m in sys.modules} & {"tensorflow", "seqio"})))
'''


def run_bench(*args, command=('-c', 'import json\n' + RUNNER)):
  env = dict(os.environ, XLA_FLAGS=TEST_XLA_FLAGS, JAX_PLATFORMS='cpu')  # one device
  return subprocess.run(
      [sys.executable, *command, '--gin_file=gin/base.gin', '--steps=2',
       '--warmup_steps=1', *args],
      cwd=REPO, env=env, capture_output=True, text=True, timeout=300)


def test_bench_prints_one_json_line_per_objective_without_tensorflow():
  out = run_bench('--gin.LM_BATCH_SIZE=4', '--gin.TEACHER_BATCH_SIZE=8',
                  '--gin.network.ModelConfig.num_layers=1', '--peak_tflops=1')
  assert out.returncode == 0, out.stderr[-2000:]
  *lines, imported = out.stdout.strip().splitlines()
  assert json.loads(imported) == []
  rows = [json.loads(line) for line in lines]
  assert [r['objective'] for r in rows] == ['lm', 'teacher', 'parity']
  for row in rows:
    assert row['tokens_per_s'] > 0 and row['step_ms'] > 0 and 0 < row['mfu'] < 1
    assert row['device']['platform'] == 'cpu' and row['config']['model']['num_layers'] == 1
  lm, teacher, _ = rows
  assert (lm['batch_size'], lm['seq_len']) == (4, 64)
  assert (teacher['batch_size'], teacher['seq_len']) == (8, 48)
  for row in (lm, teacher):
    assert row['compile_s'] > 0 and row['peak_memory_bytes'] > 0
  # The LM step also runs the tied output projection: more FLOPs per token.
  assert lm['model_flops_per_token'] > teacher['model_flops_per_token']


def test_bench_names_a_bad_gin_file_in_one_line():
  out = run_bench('--gin_file=gin/no_such.gin', command=('-m', 'freelm_jax.bench'))
  assert out.returncode != 0 and not out.stdout
  last = out.stderr.strip().splitlines()[-1]
  assert last.startswith('error: ') and 'no_such.gin' in last


def test_gpu_script_dry_run_writes_labelled_rows_of_each_variant(tmp_path):
  env = dict(os.environ, BENCH_DRY='1', OUT=str(tmp_path), PYTHON=sys.executable,
             XLA_FLAGS=TEST_XLA_FLAGS)
  out = subprocess.run(['bash', 'benchmarks/run_gpu.sh'], cwd=REPO, env=env,
                       capture_output=True, text=True, timeout=300)
  assert out.returncode == 0, out.stderr[-2000:]
  [results] = tmp_path.glob('*-cpu.jsonl')
  rows = [json.loads(line) for line in results.read_text().splitlines()]
  assert [(r['config']['label'], r['objective']) for r in rows] == [
      ('main', 'lm'), ('main', 'teacher'), ('main', 'parity'), ('no_logits_chunk', 'lm')]
  main_lm, teacher, _, unchunked = rows
  assert all(r['device']['platform'] == 'cpu' for r in rows)
  assert main_lm['config']['logits_chunk'] == 16 and unchunked['config']['logits_chunk'] == 0
  assert main_lm['config']['model']['vocab_pad_multiple'] == 128
  # Packed teacher rows: several propositions per 64-token row, real tokens counted.
  assert teacher['config']['teacher_pack_len'] == 64 and teacher['seq_len'] == 64
  assert teacher['mean_context'] < 32 and teacher['batch_tokens'] <= teacher['batch_size'] * 64
  # The chunked cross-entropy never holds the whole batch's logits.
  assert main_lm['peak_memory_bytes'] < unchunked['peak_memory_bytes']


GIN_READER = '''
import json, sys
sys.modules['tasks'] = None
from freelm_jax.config import gin_utils, settings
from freelm_jax.training import runner
gin_utils.parse(['gin/bench/freelm_0.3b_h100.gin'], [], skip_failed_imports=True)
model, data, lm = settings.ModelConfig(), settings.DataConfig(), settings.LanguageObjective()
print(json.dumps([model.dtype, model.attention_impl, model.padded_vocab_size, model.num_layers,
                  data.lm_batch_size, data.lm_seq_len, lm.logits_chunk]))
'''


def test_gpu_bench_config_has_the_peers_shape_and_the_fast_options():
  out = subprocess.run([sys.executable, '-c', GIN_READER], cwd=REPO, capture_output=True,
                       text=True, timeout=120, env=dict(os.environ, JAX_PLATFORMS='cpu'))
  assert out.returncode == 0, out.stderr[-2000:]
  assert json.loads(out.stdout.splitlines()[-1]) == [
      'bfloat16', 'cudnn', 50304, 24, 16, 1024, 256]


def test_cudnn_config_on_cpu_stops_with_one_error_line():
  out = run_bench('--gin.network.ModelConfig.num_layers=1',
                  "--gin.network.ModelConfig.dtype='bfloat16'",
                  "--gin.network.ModelConfig.attention_impl='cudnn'",
                  command=('-m', 'freelm_jax.bench'))
  assert out.returncode != 0 and not out.stdout
  last = out.stderr.strip().splitlines()[-1]
  assert last.startswith('error: ') and 'needs an NVIDIA GPU' in last
