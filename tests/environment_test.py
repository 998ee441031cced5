"""The environment `make setup` builds, and what the model path imports."""

import importlib.metadata
import subprocess
import sys

import pytest


@pytest.mark.parametrize('nightly', ['seqio-nightly', 'tfds-nightly'])
def test_no_nightly_twin_of_seqio_or_tfds_is_installed(nightly):
  # They install the same modules as seqio and tensorflow-datasets (t5's
  # metadata pulls them, which is why t5 is no dependency of this project).
  with pytest.raises(importlib.metadata.PackageNotFoundError):
    importlib.metadata.distribution(nightly)
  importlib.metadata.distribution('seqio')
  importlib.metadata.distribution('tensorflow-datasets')


def test_model_and_train_step_import_without_tensorflow_or_seqio():
  code = ('import sys; import freelm_jax.core.network, freelm_jax.core.objectives, freelm_jax.core.trainer, '
          'freelm_jax.core.partitioning; '
          'print(sorted(m for m in sys.modules if m.split(".")[0] in ("tensorflow", "seqio")))')
  out = subprocess.run([sys.executable, '-c', code], capture_output=True, text=True,
                       check=True).stdout.strip()
  assert out == '[]'
