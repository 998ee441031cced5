"""Input workers rebuild the parent's tasks from their start arguments: the
--module_import modules and the task registrations the gin config made
(repeated as plain data). cli_test checks that a real run imports such a
module once in every process."""

import json
import os
import subprocess
import sys

import gin

import tasks
from freelm_jax.config import gin_utils
from freelm_jax.config import settings
from freelm_jax.data import prefetch

REPO = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))

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
