"""SeqIO registries for FreeLM: the language stream and teacher tasks.

    import tasks
    tasks.register("my_rte", source={"validation": "/data/rte.jsonl"},
                   instance="{sentence1}",
                   propositions={0: 'Here, "{sentence2}" follows from the text.',
                                 1: 'Here, "{sentence2}" does not follow from the text.'},
                   label_field="label", task_type="nli")

Importing `tasks` registers the embedded default (`tasks.opinions`).
TensorFlow is hidden from accelerators here: the input pipeline runs on the
host and must never take the accelerator's memory.
"""

from freelm_jax.common import console

# TensorFlow's C++ start-up lines (CUDA probing) stay off the console of every
# command that imports the tasks, `python -m freelm_jax.build_glue` included.
console.import_tensorflow_quietly()

import tensorflow as tf  # pylint: disable=g-import-not-at-top,wrong-import-position

try:
  with console.stderr_fd_to_devnull():  # its CUDA probing logs past TF_CPP_MIN_LOG_LEVEL
    tf.config.set_visible_devices([], 'GPU')
except RuntimeError:  # TensorFlow already initialised its devices.
  pass


def _convert_only_what_needs_autograph() -> None:
  """tf.data runs every function it maps through AutoGraph, which took about
  3 s of CPU per pipeline and process. seqio's and this project's functions are
  written in TensorFlow ops, except seqio's packing loop (`seqio.utils`), so
  only that module and the user's own functions are converted. Where this
  TensorFlow lacks the (internal) rules table, everything is converted as before."""
  try:  # optional: an internal module, absent from some TensorFlow versions
    from tensorflow.python.autograph.core import config  # pylint: disable=g-direct-tensorflow-import
    config.CONVERSION_RULES = (
        config.Convert('seqio.utils'), config.DoNotConvert('seqio'),
        config.DoNotConvert('tasks'), config.DoNotConvert('freelm_jax'),
    ) + tuple(config.CONVERSION_RULES)
  except (ImportError, AttributeError):
    pass


_convert_only_what_needs_autograph()

# pylint: disable=g-import-not-at-top,wrong-import-position
from tasks.language import register_language
from tasks.propositions import get as get_teacher_task
from tasks.propositions import mixture_tasks
from tasks.propositions import provider as get_task_or_mixture
from tasks.propositions import register
from tasks.propositions import registered as registered_teacher_tasks
from tasks.propositions import task_types
from tasks.propositions import TeacherTask
from tasks.sources import DataError
from tasks import opinions
from tasks import glue
from tasks import gin_configurables
