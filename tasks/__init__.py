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

import tensorflow as tf

try:
  tf.config.set_visible_devices([], 'GPU')
except RuntimeError:  # TensorFlow already initialised its devices.
  pass

# pylint: disable=g-import-not-at-top,wrong-import-position
from tasks.language import register_language
from tasks.propositions import get as get_teacher_task
from tasks.propositions import register
from tasks.propositions import registered as registered_teacher_tasks
from tasks.propositions import task_types
from tasks.propositions import TeacherTask
from tasks.sources import DataError
from tasks import opinions
from tasks import glue
from tasks import gin_configurables
