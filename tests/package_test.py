"""The installed package: a wheel of the project works from any directory.

The wheel is built from a copy of the sources (no build files in the
checkout), installed without dependencies into a folder of its own, and used
from another working directory with torch and transformers blocked: the core
install has neither.
"""

import glob
import os
import shutil
import subprocess
import sys
import zipfile

import pytest

from freelm_jax.core import partitioning

REPO = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
CLI_MODULES = ('train', 'eval', 'score', 'convert', 'plan', 'compare', 'plots', 'bench')


@pytest.fixture(scope='module')
def wheel(tmp_path_factory):
  source = tmp_path_factory.mktemp('source')
  for name in ('freelm_jax', 'tasks', 'gin'):
    shutil.copytree(os.path.join(REPO, name), source / name,
                    ignore=shutil.ignore_patterns('__pycache__'))
  for name in ('pyproject.toml', 'README.md'):
    shutil.copy(os.path.join(REPO, name), source / name)
  out = tmp_path_factory.mktemp('wheel')
  subprocess.run([sys.executable, '-m', 'pip', 'wheel', '-q', '--no-deps',
                  '--no-build-isolation', '-w', str(out), str(source)],
                 check=True, capture_output=True, text=True, timeout=300)
  [path] = glob.glob(str(out / '*.whl'))
  return path


def _shipped(root: str, prefix: str, skip=()) -> set[str]:
  return {os.path.join(prefix, os.path.relpath(p, root))
          for p in glob.glob(os.path.join(root, '**', '*'), recursive=True)
          if os.path.isfile(p) and '__pycache__' not in p and not p.endswith(skip)}


def test_wheel_holds_every_gin_file_the_shipped_data_and_the_commands(wheel):
  with zipfile.ZipFile(wheel) as archive:
    names = set(archive.namelist())
    [entry_points] = [n for n in names if n.endswith('entry_points.txt')]
    scripts = archive.read(entry_points).decode()
    [metadata] = [n for n in names if n.endswith('.dist-info/METADATA')]
    requires = [line.split(':', 1)[1].strip() for line in
                archive.read(metadata).decode().splitlines() if line.startswith('Requires-Dist:')]
  gin_files = _shipped(os.path.join(REPO, 'gin'), 'freelm_jax/gin')
  data_files = _shipped(os.path.join(REPO, 'tasks', 'data'), 'tasks/data')
  assert gin_files and data_files
  assert gin_files <= names and data_files <= names
  for module in CLI_MODULES:
    assert f'freelm-{module} = freelm_jax.{module}:run' in scripts
  assert 'freelm-build-glue = freelm_jax.build_glue:run' in scripts
  # The install lines of the README: JAX's GPU and TPU builds come with extras,
  # and torch and transformers only with `interop`.
  extras = {r.split('extra == ')[1].strip('"\'') for r in requires if 'extra ==' in r}
  assert {'cuda12', 'tpu', 'interop', 'dev'} <= extras
  assert any(r.startswith('jax[cuda12]') and '"cuda12"' in r for r in requires)
  assert any(r.startswith('jax[tpu]') and '"tpu"' in r for r in requires)
  for name in ('torch', 'transformers'):
    assert [r for r in requires if r.startswith(name)]
    assert all('"interop"' in r for r in requires if r.startswith(name))


_INSTALLED_USE = r'''
import os, sys

class NotInstalled:  # the core install has neither torch nor transformers
  def find_spec(self, name, path=None, target=None):
    if name.split('.')[0] in ('torch', 'transformers'):
      raise ModuleNotFoundError(f'No module named {name!r}', name=name)

sys.meta_path.insert(0, NotInstalled())
site = sys.argv[1]
import freelm_jax
assert freelm_jax.__file__.startswith(site), freelm_jax.__file__
from freelm_jax.common import resources
from freelm_jax.config import gin_utils
from freelm_jax.interop import hf_format
for name in ('gin/base.gin', 'base.gin'):
  assert gin_utils._resolve(name).startswith(site)
gin_utils.parse(['gin/base.gin'], ['TRAIN_STEPS = 4'])
assert resources.resolve('tasks/data/opinions').startswith(site)
import tasks
tasks.register('installed_check', source={'validation': sys.argv[2]}, instance='{text}',
               propositions={0: 'It is false.', 1: 'It is true.'}, task_type='check')
import seqio
assert 'installed_check' in seqio.TaskRegistry.names()
os.makedirs('hf')
open('hf/pytorch_model.bin', 'wb').close()
try:
  hf_format.read_state_dict('hf')
except Exception as e:
  print(e)
'''


def test_installed_wheel_works_from_another_directory_without_torch(wheel, tmp_path):
  site = tmp_path / 'site'
  subprocess.run([sys.executable, '-m', 'pip', 'install', '-q', '--no-deps', '--no-index',
                  '--target', str(site), wheel], check=True, capture_output=True, timeout=300)
  elsewhere = tmp_path / 'elsewhere'
  elsewhere.mkdir()
  (elsewhere / 'mine.jsonl').write_text('{"text": "a", "label": 1}\n')
  env = dict(os.environ, PYTHONPATH=str(site))
  r = subprocess.run([sys.executable, '-c', _INSTALLED_USE, str(site), 'mine.jsonl'],
                     cwd=elsewhere, env=env, capture_output=True, text=True, timeout=300)
  assert r.returncode == 0, r.stderr
  assert 'pip install "freelm_jax[interop]"' in r.stdout


def _fake_pci(root, devices):
  for name, (vendor, device_class) in devices.items():
    (root / name).mkdir()
    (root / name / 'vendor').write_text(vendor + '\n')
    (root / name / 'class').write_text(device_class + '\n')
  return str(root)


@pytest.mark.parametrize('vendor, device_class, extra', [
    ('0x10de', '0x030200', 'cuda12'),  # an NVIDIA 3D controller
    ('0x1ae0', '0x120000', 'tpu'),  # a Google TPU
])
def test_an_unused_accelerator_names_the_install_that_fixes_it(tmp_path, vendor,
                                                               device_class, extra):
  sysfs = _fake_pci(tmp_path, {'0000:00:01.0': ('0x8086', '0x060000'),
                               '0000:00:04.0': (vendor, device_class)})
  hint = partitioning.unused_accelerator_hint('cpu', sysfs)
  assert f'pip install "freelm_jax[{extra}]"' in hint and '\n' not in hint
  assert partitioning.unused_accelerator_hint('gpu' if extra == 'cuda12' else 'tpu',
                                              sysfs) is None


def test_no_hint_without_an_accelerator(tmp_path):
  sysfs = _fake_pci(tmp_path, {'0000:00:01.0': ('0x8086', '0x060000'),
                               '0000:00:02.0': ('0x10de', '0x040300')})  # NVIDIA audio
  assert partitioning.unused_accelerator_hint('cpu', sysfs) is None
