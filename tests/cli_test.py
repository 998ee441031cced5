"""The train CLI from another working directory: gin includes resolve, the
console shows no library log lines, the logs go to model_dir/train.log, and a
--module_import module is imported once in each process of the run."""

import os
import subprocess
import sys

import pytest

from freelm_jax.training import metrics as metrics_lib

REPO = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
TINY = [
    '--gin.network.ModelConfig.num_layers=1', '--gin.network.ModelConfig.d_model=32',
    '--gin.network.ModelConfig.num_heads=2', '--gin.LM_BATCH_SIZE=8',
    '--gin.TEACHER_BATCH_SIZE=8', '--gin.LM_SEQ_LEN=32', '--gin.TEACHER_SEQ_LEN=32',
    '--gin.WARMUP_STEPS=1', '--gin.TRAIN_STEPS=2', '--gin.LM_EVAL_BATCHES=1',
    '--gin.train_lib.DataConfig.eval_max_examples=2',
    '--gin.train_lib.DataConfig.eval_probe=False',  # fitting it is most of a run's time
]

# A user module that notes every process importing it: "pid starter_pid", the
# starter being the process that started this one as a worker (0: none).
PID_MODULE = '''
import multiprocessing
import os
starter = multiprocessing.parent_process()
with open(os.path.join(os.path.dirname(os.path.abspath(__file__)), 'imports.txt'), 'a') as f:
  f.write(f'{os.getpid()} {starter.pid if starter else 0}\\n')
'''


@pytest.fixture(scope='module')
def run(tmp_path_factory):
  """Trains from a working directory on sys.path that holds `runs/`, `data/`
  and `models/` folders (as the repository root does after `make demo`)."""
  cwd = tmp_path_factory.mktemp('cwd')
  for name in ('runs', 'data', 'models'):
    (cwd / name).mkdir()
  (cwd / 'pid_tasks.py').write_text(PID_MODULE)
  model_dir = cwd / 'runs' / 'model'
  env = {k: v for k, v in os.environ.items() if k != 'TF_CPP_MIN_LOG_LEVEL'}
  env['PYTHONPATH'] = os.pathsep.join([str(cwd), REPO])  # cwd on sys.path, like the repo root
  result = subprocess.run(
      [sys.executable, '-m', 'freelm_jax.train',
       f'--gin_file={os.path.join(REPO, "gin", "base.gin")}', f'--model_dir={model_dir}',
       '--module_import=pid_tasks', *TINY], cwd=cwd, env=env, capture_output=True, text=True,
      timeout=600)
  return result, model_dir


def test_train_cli_runs_from_another_working_directory(run):
  result, model_dir = run
  assert result.returncode == 0, result.stderr[-3000:]
  assert 'Path not found' not in result.stderr
  kinds = [r['kind'] for r in metrics_lib.read(model_dir)]
  assert kinds.count('train') == 2 and 'eval' in kinds


def test_train_cli_console_is_quiet_and_logs_to_file(run):
  result, model_dir = run
  assert result.returncode == 0, result.stderr[-3000:]
  lines = result.stderr.replace('\r', '\n').splitlines()
  noisy = [l for l in lines if 'ERROR' in l or 'WARNING' in l or 'Warning' in l]
  assert not noisy, noisy[:5]
  assert any('2/2' in l and 'step' in l for l in lines)  # the progress bar
  assert result.stdout.count('num_examples') == 1  # the final table, printed once
  assert 'perplexity' in result.stdout
  log = (model_dir / 'train.log').read_text()
  assert 'Evaluation at step 2' in log


def test_a_module_import_runs_once_in_the_parent_and_once_in_each_worker(run):
  result, model_dir = run
  assert result.returncode == 0, result.stderr[-3000:]
  lines = [l.split() for l in (model_dir.parent.parent / 'imports.txt').read_text().splitlines()]
  pids = [int(pid) for pid, _ in lines]
  assert len(pids) == len(set(pids))  # each process imported it once
  parent = [pid for pid, ppid in lines if int(ppid) not in pids]
  assert len(parent) == 1
  workers = [pid for pid, ppid in lines if ppid == parent[0]]
  # The parent, its language and teacher stream workers, and the evaluation's.
  assert len(workers) == 3 and len(lines) == 1 + len(workers)


def test_help_of_every_gin_tool_lists_the_gin_and_multi_host_flags():
  own = {'train': 'model_dir', 'eval': 'checkpoint_step', 'compare': 'output_dir',
         'plan': 'num_devices', 'bench': 'steps'}
  processes = {tool: subprocess.Popen(  # at once: most of each is starting Python
      [sys.executable, '-m', f'freelm_jax.{tool}', '--help'], cwd=REPO,
      stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True) for tool in own}
  for tool, process in processes.items():
    out, err = process.communicate(timeout=300)  # absl's --help exits 1
    assert 'Try --helpfull' in out, err[-2000:]
    for flag in (own[tool], 'gin_file', 'gin_bindings', 'module_import',
                 'coordinator_address', 'num_processes', 'process_id', 'distributed_timeout'):
      assert f'--{flag}:' in out, (tool, flag, out)
