"""Gin names of the data functions that `gin/data/*.gin` and `gin/eval/*.gin` call.

Imported by `import tasks` (so a model_dir's operative config.gin parses
again at evaluation) and by those gin files. Each call gin makes to a
configurable here that registers tasks is recorded as plain data
(`gin_utils.registering_configurable`); input workers repeat these calls.
"""

import inspect

import gin

from freelm_jax.config import gin_utils
from tasks import glue
from tasks import language
from tasks import propositions
from tasks import vocabulary

# Arguments of the teacher tasks registered from gin, by name.
_GIN_TASKS: dict[str, dict] = {}


def register_task(**kwargs) -> str:
  """`tasks.register` for gin: registers the task and returns its name, so
  `teacher_mixture = @my_task/tasks.register()` trains on it. gin calls it
  each time the value is read: the same call again registers nothing."""
  if _GIN_TASKS.get(kwargs['name']) != kwargs:
    propositions.register(**kwargs)
    _GIN_TASKS[kwargs['name']] = kwargs
  return kwargs['name']


register_task.__signature__ = inspect.signature(propositions.register).replace(
    return_annotation=str)

for _function in (glue.register_tfds, glue.local_mixture, glue.local_eval_tasks):
  gin_utils.registering_configurable(_function, module='glue')
gin_utils.registering_configurable(language.stream, module='language')
gin_utils.registering_configurable(register_task, module='tasks', name='register')
gin.external_configurable(glue.tfds_eval_tasks, module='glue')  # names only
gin.external_configurable(vocabulary.gpt2_dir, module='vocabulary')
gin.external_configurable(vocabulary.data_file, module='vocabulary')
