"""tpu_scripts/: every script's --dry_run prints the gcloud commands it would run."""

import os
import shlex
import subprocess

import pytest

REPO = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
SCRIPTS = ('create', 'install', 'launch', 'logs', 'stop', 'delete')


def _dry_run(script, *args):
  r = subprocess.run(['bash', os.path.join(REPO, 'tpu_scripts', f'{script}.sh'), '--dry_run',
                      '--name=run1', '--zone=us-central2-b', *args],
                     capture_output=True, text=True, timeout=30,
                     env=dict(os.environ, PATH='/usr/bin:/bin'))  # no gcloud needed
  assert r.returncode == 0, r.stderr
  return [shlex.split(line) for line in r.stdout.splitlines()]


def _flag(command, name):
  values = [a.split('=', 1)[1] for a in command if a.startswith(f'--{name}=')]
  assert len(values) == 1, (name, command)
  return values[0]


def test_create_one_slice_and_multi_slice():
  [create] = _dry_run('create', '--accelerator_type=v4-8', '--project=my-proj')
  assert create[:6] == ['gcloud', 'compute', 'tpus', 'tpu-vm', 'create', 'run1']
  assert (_flag(create, 'accelerator-type'), _flag(create, 'version'),
          _flag(create, 'zone'), _flag(create, 'project')) == (
              'v4-8', 'tpu-ubuntu2204-base', 'us-central2-b', 'my-proj')
  [create] = _dry_run('create', '--accelerator_type=v5e-16')
  assert (_flag(create, 'accelerator-type'), _flag(create, 'version')) == (
      'v5litepod-16', 'v2-alpha-tpuv5-lite')
  [create] = _dry_run('create', '--accelerator_type=v4-32', '--num_slices=2')
  assert create[3:6] == ['queued-resources', 'create', 'run1']
  assert (_flag(create, 'node-count'), _flag(create, 'node-prefix')) == ('2', 'run1')


def test_launch_runs_the_same_train_command_on_every_worker_of_every_slice():
  train = ['--gin_file=gin/base.gin', "--gin.OBJECTIVE_SCHEDULE='lm_only'",
           '--model_dir=gs://my-bucket/runs/a b']
  commands = _dry_run('launch', '--num_slices=2', '--', *train)
  assert [c[5] for c in commands] == ['run1-0', 'run1-1']
  for command in commands:
    assert command[:5] == ['gcloud', 'compute', 'tpus', 'tpu-vm', 'ssh']
    assert _flag(command, 'worker') == 'all'
    remote = shlex.split(_flag(command, 'command'))
    start = remote.index('freelm_jax.train')
    assert remote[start + 1:start + 4] == train  # the flags arrive intact
    assert '> ~/train.log' in _flag(command, 'command')
    assert 'echo $! > ~/train.pid' in _flag(command, 'command')


def test_install_copies_the_checkout_and_installs_the_tpu_extra_on_all_workers():
  tar, scp, ssh = _dry_run('install')
  assert tar[0] == 'tar' and '--exclude=.venv' in tar
  assert scp[3:5] == ['tpu-vm', 'scp'] and _flag(scp, 'worker') == 'all'
  remote = _flag(ssh, 'command')
  assert "pip install -q -e '.[tpu]' -c requirements.txt" in remote
  assert 'torch' not in remote and 'interop' not in remote  # no CUDA build of torch


def test_logs_stop_delete():
  [logs] = _dry_run('logs')
  assert _flag(logs, 'worker') == '0' and 'tail' in _flag(logs, 'command')
  [stop] = _dry_run('stop')
  assert _flag(stop, 'worker') == 'all' and 'kill' in _flag(stop, 'command')
  [delete] = _dry_run('delete')
  assert delete[3:6] == ['tpu-vm', 'delete', 'run1'] and '--quiet' in delete
  [delete] = _dry_run('delete', '--num_slices=3')
  assert delete[3:6] == ['queued-resources', 'delete', 'run1'] and '--force' in delete


@pytest.mark.parametrize('script', SCRIPTS)
def test_unknown_flag_is_one_line_and_fails(script):
  r = subprocess.run(['bash', os.path.join(REPO, 'tpu_scripts', f'{script}.sh'), '--dry_run',
                      '--zone'], capture_output=True, text=True, timeout=30)
  assert r.returncode == 2
  assert r.stderr.strip() == (
      'error: unknown flag --zone (see the header of tpu_scripts/common.sh)')
  assert r.stdout == ''


def test_launch_without_train_flags_fails():
  r = subprocess.run(['bash', os.path.join(REPO, 'tpu_scripts', 'launch.sh'), '--dry_run'],
                     capture_output=True, text=True, timeout=30)
  assert r.returncode == 2 and r.stderr.startswith('error: give the train flags after --')
