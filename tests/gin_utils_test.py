"""Gin includes resolve from any working directory, whatever folders it holds."""

import logging
import os
import subprocess
import sys

import gin
import pytest

from freelm_jax.config import gin_utils

REPO = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
BASE = os.path.join(REPO, 'gin', 'base.gin')


@pytest.fixture
def cwd_with_package_like_folders(tmp_path, monkeypatch):
  """A working directory on sys.path holding empty `runs/`, `data/`, `models/`
  (namespace packages to importlib) and a `gin` link: the repository root
  after `make demo` wrote runs/demo."""
  for name in ('runs', 'data', 'models'):
    (tmp_path / name).mkdir()
  os.symlink(os.path.join(REPO, 'gin'), tmp_path / 'gin')
  monkeypatch.chdir(tmp_path)
  monkeypatch.setattr(sys, 'path', ['', str(tmp_path)] + sys.path)
  gin.clear_config(clear_constants=True)
  yield tmp_path
  gin.clear_config(clear_constants=True)


@pytest.mark.parametrize('gin_file', ['gin/base.gin', BASE])
def test_base_parses_with_package_like_folders_in_cwd(cwd_with_package_like_folders,
                                                      gin_file, caplog):
  with caplog.at_level(logging.INFO):
    gin_utils.parse([gin_file], ['TRAIN_STEPS = 7'])
  assert gin.query_parameter('%TRAIN_STEPS') == 7
  assert gin.query_parameter('%CHECKPOINT_EVERY') != 500  # base.gin's, not runs/pretrain.gin's
  assert not [r for r in caplog.records if r.levelno >= logging.WARNING]


def test_includes_resolve_from_the_including_file_then_gin_dir(
    cwd_with_package_like_folders):
  exp = cwd_with_package_like_folders / 'exp'
  exp.mkdir()
  (exp / 'local.gin').write_text('TRAIN_STEPS = 11\n')
  (exp / 'my.gin').write_text(
      "include 'base.gin'\ninclude 'local.gin'\ninclude 'models/gpt2_124m.gin'\n")
  gin_utils.parse([str(exp / 'my.gin')], [])
  assert gin.query_parameter('%TRAIN_STEPS') == 11
  assert gin.query_parameter('network.ModelConfig.num_layers') == 12


def test_missing_include_is_one_config_error(cwd_with_package_like_folders):
  (cwd_with_package_like_folders / 'bad.gin').write_text("include 'runs/nope.gin'\n")
  with pytest.raises(gin_utils.ConfigError, match=r'--gin_file=bad.gin: .*runs/nope.gin'):
    gin_utils.parse(['bad.gin'], [])


PARSE_WITHOUT_TASKS = '''
import sys
sys.modules['tasks'] = None
import gin
from freelm_jax.config import gin_utils
for files in (['gin/base.gin'], ['gin/paper.gin'], ['gin/rehearsal/paper_cpu.gin'],
              ['gin/base.gin', 'gin/data/glue_local.gin']):
  gin.clear_config(clear_constants=True)
  gin_utils.parse(files, [], skip_failed_imports=True, unread_macros=('INIT_FROM', 'GLUE_DIR'))
  print(repr(gin.query_parameter('train_lib.DataConfig.lm_task')))
'''


def test_shipped_configs_parse_without_tasks_as_plan_does():
  """Without `tasks` (TensorFlow, as in plan and bench) the data configurables
  the shipped gin files call are skipped (`DATA_CONFIGURABLES`): None."""
  result = subprocess.run([sys.executable, '-c', PARSE_WITHOUT_TASKS], cwd=REPO,
                          capture_output=True, text=True, timeout=120)
  assert result.returncode == 0, result.stderr[-2000:]
  assert result.stdout.split() == ["'opinions_lm'", 'None', 'None', 'None']


def test_a_required_setting_left_unset_is_one_line_quoting_its_comment(tmp_path):
  gin.clear_config(clear_constants=True)
  (tmp_path / 'exp.gin').write_text(
      "include 'base.gin'\n# Where the data lives:\n# any directory.\nDATA_DIR = %gin.REQUIRED\n"
      "WEIGHTS = %gin.REQUIRED  # a checkpoint directory\n")
  with pytest.raises(gin_utils.ConfigError) as error:
    gin_utils.parse([str(tmp_path / 'exp.gin')], ["WEIGHTS = 'w'"])
  assert str(error.value) == (
      f'DATA_DIR is required by {tmp_path / "exp.gin"}:4: Where the data lives: any directory.')
  gin.clear_config(clear_constants=True)
  with pytest.raises(gin_utils.ConfigError, match=r'^WEIGHTS is required by .*exp.gin:5: a '
                     r'checkpoint directory$'):
    gin_utils.parse([str(tmp_path / 'exp.gin')], ["DATA_DIR = 'd'"])
  gin.clear_config(clear_constants=True)
