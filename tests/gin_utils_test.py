"""Gin includes resolve from any working directory, whatever folders it holds."""

import logging
import os
import sys

import gin
import pytest

from freelm_jax import gin_utils

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
