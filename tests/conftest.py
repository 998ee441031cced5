"""Test set-up: 8 virtual CPU devices (for sharding tests), repo on sys.path."""

import os
import sys

os.environ.setdefault('XLA_FLAGS', '--xla_force_host_platform_device_count=8')
os.environ.setdefault('TF_CPP_MIN_LOG_LEVEL', '2')
os.environ.setdefault('JAX_PLATFORMS', 'cpu')
sys.path.insert(0, os.path.dirname(os.path.dirname(os.path.abspath(__file__))))

import pytest  # pylint: disable=g-import-not-at-top,wrong-import-position


@pytest.fixture(autouse=True)
def _own_task_registrations(monkeypatch):
  """Gin-time task registrations are recorded in an environment variable that
  spawned input workers replay (tasks/sources.py); each test starts without
  the records of earlier tests, so the commands it runs do not replay them."""
  monkeypatch.delenv('FREELM_TASK_REGISTRATIONS', raising=False)
