"""Gin names of the data functions that `gin/data/*.gin` and `gin/eval/*.gin` call.

Imported by `import tasks` (so a model_dir's operative config.gin parses
again at evaluation) and by those gin files.
"""

import gin

from tasks import glue
from tasks import language
from tasks import vocabulary

for _function in (glue.register_tfds, glue.tfds_eval_tasks, glue.local_mixture,
                  glue.local_eval_tasks):
  gin.external_configurable(_function, module='glue')
gin.external_configurable(language.stream, module='language')
gin.external_configurable(vocabulary.gpt2_dir, module='vocabulary')
gin.external_configurable(vocabulary.data_file, module='vocabulary')
