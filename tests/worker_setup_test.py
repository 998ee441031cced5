"""Input workers rebuild the parent's tasks from their start arguments: the
--module_import modules (imported once in every process) and the task
registrations the gin config made (repeated as plain data)."""

import json
import os
import subprocess
import sys

import gin

import tasks
from freelm_jax.config import gin_utils
from freelm_jax.config import settings
from freelm_jax.data import prefetch
from freelm_jax.training import runner

REPO = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))

# A user module that notes every process importing it: "pid starter_pid", the
# starter being the process that started this one as a worker (0: none).
PID_MODULE = '''
import multiprocessing
import os
starter = multiprocessing.parent_process()
with open(os.path.join(os.path.dirname(os.path.abspath(__file__)), 'imports.txt'), 'a') as f:
  f.write(f'{os.getpid()} {starter.pid if starter else 0}\\n')
'''


def _parse_empty_config():
  gin.clear_config(clear_constants=True)
  gin_utils.parse([], [])
  gin.clear_config(clear_constants=True)


def _gin_task_bindings(path):
  return [
      'train_lib.DataConfig.eval_tasks = [@gin_task/tasks.register()]',
      "gin_task/tasks.register.name = 'worker_setup_gin_task'",
      f"gin_task/tasks.register.source = {{'validation': {str(path)!r}}}",
      "gin_task/tasks.register.instance = '{s}'",
      "gin_task/tasks.register.propositions = {0: '{s} is even.', 1: '{s} is odd.'}",
      "gin_task/tasks.register.task_type = 'worker_setup_parity'",
  ]


def test_a_gin_registration_reaches_the_worker_as_a_start_argument(tmp_path):
  path = tmp_path / 'rows.jsonl'
  path.write_text(''.join(json.dumps({'s': f'row {i}', 'label': i % 2}) + '\n'
                          for i in range(6)))
  gin.clear_config(clear_constants=True)
  try:
    gin_utils.parse(['gin/base.gin'], _gin_task_bindings(path))
    names = settings.DataConfig().eval_tasks
    settings.DataConfig()  # gin calls again: the same task, registered once
    setup = prefetch.worker_setup()
  finally:
    gin.clear_config(clear_constants=True)
  assert names == ['worker_setup_gin_task']
  assert [function for function, _ in setup.registrations] == [
      'tasks.gin_configurables.register_task']
  assert not [name for name in os.environ if name.startswith('FREELM')]
  with prefetch.ProcessIterator(
      'freelm_jax.data.input_pipeline.eval_batches',
      dict(names=names, seq_len=32, batch_size=4, split='validation',
           task_types=list(tasks.task_types())), setup) as batches:
    rows = sum(int(b['weights'].sum()) for _, b in batches)
  assert rows == 6 * 2  # every example, one proposition per label
  _parse_empty_config()
  assert prefetch.worker_setup().registrations == ()  # a new config, new records


def test_a_direct_call_of_a_registering_function_records_nothing(tmp_path):
  (tmp_path / 'lm.txt').write_text('One document.\n')
  _parse_empty_config()
  tasks.language.stream({'train': str(tmp_path / 'lm.txt')}, name='worker_setup_direct')
  assert prefetch.worker_setup().registrations == ()


def test_a_module_import_runs_once_in_the_parent_and_once_in_each_worker(tmp_path):
  (tmp_path / 'pid_tasks.py').write_text(PID_MODULE)
  bindings = [
      'network.ModelConfig.num_layers = 1', 'network.ModelConfig.d_model = 32',
      'network.ModelConfig.num_heads = 2', 'LM_BATCH_SIZE = 8', 'TEACHER_BATCH_SIZE = 8',
      'LM_SEQ_LEN = 32', 'TEACHER_SEQ_LEN = 24', 'WARMUP_STEPS = 1', 'TRAIN_STEPS = 2',
      'LM_EVAL_BATCHES = 0', "train_lib.DataConfig.eval_tasks = ['opinions_party']",
      'train_lib.DataConfig.eval_max_examples = 8', 'train_lib.DataConfig.eval_probe = False']
  process = subprocess.run(
      [sys.executable, '-m', 'freelm_jax.train', '--gin_file=gin/base.gin',
       f'--model_dir={tmp_path / "model"}', '--module_import=pid_tasks',
       *[f'--gin_bindings={b}' for b in bindings]],
      cwd=REPO, capture_output=True, text=True, timeout=1200,
      env=dict(os.environ, PYTHONPATH=os.pathsep.join([REPO, str(tmp_path)])))
  assert process.returncode == 0, process.stderr[-2000:]
  lines = [l.split() for l in (tmp_path / 'imports.txt').read_text().splitlines()]
  pids = [int(pid) for pid, _ in lines]
  assert len(pids) == len(set(pids))  # each process imported it once
  parent = [pid for pid, ppid in lines if int(ppid) not in pids]
  assert len(parent) == 1
  workers = [pid for pid, ppid in lines if ppid == parent[0]]
  # The parent, its language and teacher stream workers, and the evaluation's.
  assert len(workers) == 3 and len(lines) == 1 + len(workers)


FORKED_SERVER = '''
from freelm_jax.data import prefetch
import tasks  # what a command has imported when it starts the server
assert prefetch.start_server_by_fork(), 'no server started'
assert not prefetch.start_server_by_fork(), 'a second server started'
items = list(prefetch.ProcessIterator('itertools.repeat', {'object': 7, 'times': 3}))
server = prefetch.forkserver._forkserver._forkserver_pid
with open(f'/proc/{server}/cmdline', 'rb') as f:
  server_command = f.read()
with open('/proc/self/cmdline', 'rb') as f:
  own_command = f.read()
print(items, server_command == own_command)
'''


def test_a_command_forks_the_worker_server_from_itself():
  out = subprocess.run([sys.executable, '-c', FORKED_SERVER], capture_output=True, text=True,
                       cwd=REPO, check=False, timeout=300)
  assert out.returncode == 0, out.stderr[-2000:]
  assert out.stdout.strip() == '[7, 7, 7] True'  # workers run; the server is this process forked
