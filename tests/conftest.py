"""Test set-up: 8 virtual CPU devices (for sharding tests), repo on sys.path."""

import atexit
import os
import shutil
import sys
import tempfile

# Compile-time flags for the tiny test models: optimisation level 0, and XLA:CPU's
# older elemental emitters instead of its fusion emitters. trainer_test's
# reference losses (three compiles) take 63 CPU-s with XLA's defaults, 17 at
# level 0 and 8.7 with both flags. The tests compare runs with each other
# (resume == uninterrupted, sharded == unsharded) under the same flags, never
# with numbers compiled otherwise.
TEST_XLA_FLAGS = '--xla_backend_optimization_level=0 --xla_cpu_use_fusion_emitters=false'
os.environ.setdefault('XLA_FLAGS', f'--xla_force_host_platform_device_count=8 {TEST_XLA_FLAGS}')
os.environ.setdefault('TF_CPP_MIN_LOG_LEVEL', '2')
os.environ.setdefault('JAX_PLATFORMS', 'cpu')
# One compilation cache for this test session and the commands it runs: the
# many runs of the same tiny model (reference, killed, resumed; each schedule)
# compile each step once. A fresh directory: no test sees an earlier session's.
if 'JAX_COMPILATION_CACHE_DIR' not in os.environ:
  os.environ['JAX_COMPILATION_CACHE_DIR'] = tempfile.mkdtemp(prefix='freelm_test_xla_cache_')
  atexit.register(shutil.rmtree, os.environ['JAX_COMPILATION_CACHE_DIR'], True)
  os.environ['JAX_PERSISTENT_CACHE_MIN_COMPILE_TIME_SECS'] = '0'
  os.environ['JAX_PERSISTENT_CACHE_MIN_ENTRY_SIZE_BYTES'] = '0'
sys.path.insert(0, os.path.dirname(os.path.dirname(os.path.abspath(__file__))))
