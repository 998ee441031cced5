"""`python -m freelm_jax.bench` (`make bench`): its JSON lines, without TensorFlow."""

import json
import os
import subprocess
import sys

REPO = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
# Runs the benchmark CLI in-process, then reports whether TF or seqio was imported.
RUNNER = '''
import sys
from absl import app
from freelm_jax import bench, gin_utils
try:
  app.run(bench.main, argv=gin_utils.rewrite_gin_args(sys.argv))
except SystemExit as e:
  assert not e.code, e.code
print(json.dumps(sorted({m.split(".")[0] for m in sys.modules} & {"tensorflow", "seqio"})))
'''


def run_bench(*args, command=('-c', 'import json\n' + RUNNER)):
  env = dict(os.environ, XLA_FLAGS='', JAX_PLATFORMS='cpu')
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
