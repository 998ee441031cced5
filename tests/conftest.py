"""Test set-up: 8 virtual CPU devices (for sharding tests), repo on sys.path."""

import os
import sys

os.environ.setdefault('XLA_FLAGS', '--xla_force_host_platform_device_count=8')
os.environ.setdefault('TF_CPP_MIN_LOG_LEVEL', '2')
os.environ.setdefault('JAX_PLATFORMS', 'cpu')
sys.path.insert(0, os.path.dirname(os.path.dirname(os.path.abspath(__file__))))

import pytest  # pylint: disable=g-import-not-at-top

SHARED_GLUE = os.path.join(os.path.dirname(os.path.dirname(os.path.abspath(__file__))),
                           '..', 'shared', 'data', 'glue')


@pytest.fixture
def clean_gin():
  import gin  # pylint: disable=g-import-not-at-top
  gin.clear_config(clear_constants=True)
  yield
  gin.clear_config(clear_constants=True)
