"""`train`, the gin configurable a run starts from (`train_lib.train`): its
settings checked and its trainer built, then `lifecycle.run`. Without the data
layer, `trainer_without_data` builds the same trainer for plan and bench.
"""

import inspect
import sys
from typing import Any, Callable, Optional, Sequence, Union

import gin
import optax

from freelm_jax.common import errors
from freelm_jax.config import gin_utils
from freelm_jax.config import settings
from freelm_jax.core import network
from freelm_jax.core import objectives
from freelm_jax.core import schedules


def trainer_without_data(gin_files: Sequence[str], bindings: Sequence[str],
                         train_steps: int = 1) -> tuple:
  """(model_config, data_config, trainer, schedule) from gin files, with no
  data layer: the objectives and schedule are those bound to `train`.

  gin's `import tasks` is skipped (it would import TensorFlow), so `plan` and
  `bench` run where only JAX is installed; the batch sizes are checked.
  INIT_FROM may stay `%gin.REQUIRED` (gin/paper.gin): no weights are loaded here.
  """
  sys.modules['tasks'] = None  # gin's `import tasks` fails, and is skipped.
  gin_utils.parse(gin_files, bindings, skip_failed_imports=True, unread_macros=('INIT_FROM',))
  model_config, data = settings.ModelConfig(), settings.DataConfig()
  schedule = schedules.get(_bound_to_train('objective_schedule'))
  trainer = settings.build_trainer(
      model_config, settings.MeshConfig(), settings.create_optimizer, train_steps,
      _bound_to_train('teacher_objective'),
      extra_objectives=_bound_to_train('extra_objectives'))
  settings.check_fit(data, trainer, schedule)
  return model_config, data, trainer, schedule


def _bound_to_train(name: str) -> Any:
  """The value gin binds to `train`'s argument `name`, else its default."""
  bound = gin.get_bindings(train)
  return bound[name] if name in bound else inspect.signature(train).parameters[name].default


def check_run(train_steps: int, checkpoint_every: int, eval_every: int,
              log_every: int) -> None:
  """Raises SettingError for the first of `train`'s own settings out of range."""
  errors.check_count(train, 'train_steps', train_steps, 1)
  errors.check_count(train, 'checkpoint_every', checkpoint_every, 1,
                     ' (the last step is always saved)')
  errors.check_count(train, 'eval_every', eval_every, 0, ' (0: only the final evaluation)')
  errors.check_count(train, 'log_every', log_every, 1)


@gin.configurable(module='train_lib')
def train(
    *,
    model_dir: str = gin.REQUIRED,
    model_config: network.ModelConfig = gin.REQUIRED,
    data: settings.DataConfig = gin.REQUIRED,
    train_steps: int = gin.REQUIRED,
    optimizer: Callable[..., tuple[optax.GradientTransformation, optax.Schedule]] = gin.REQUIRED,
    objective_schedule: Union[str, schedules.Schedule] = 'parity',
    teacher_objective: objectives.TeacherObjective = objectives.TeacherObjective(),
    extra_objectives: Sequence[objectives.Objective] = (),
    mesh: settings.MeshConfig = settings.MeshConfig(),
    checkpoint_every: int = 500,
    eval_every: int = 0,
    log_every: int = 50,
    seed: int = 0,
    init_from: Optional[str] = None,
    skip_nonfinite: bool = False,
) -> list[dict]:
  """Trains FreeLM on its schedule's objectives; returns the final evaluation rows.

  `objective_schedule` (gin `OBJECTIVE_SCHEDULE`): a schedule's name or a
  `schedules.Schedule`; `extra_objectives`: objectives beside 'lm' and
  'teacher' (each under its `name`) for the schedule to use.
  `init_from` (gin `INIT_FROM`): weights for a model_dir with no checkpoint yet.
  `skip_nonfinite`: skip (do not apply) updates with a non-finite loss, gradient
  or parameters and count them as `skipped_steps`, instead of stopping the run.
  On SIGTERM the run saves a checkpoint at the current step and returns []
  (`loop.train`).
  """
  check_run(train_steps, checkpoint_every, eval_every, log_every)
  schedule = schedules.get(objective_schedule)
  trainer = settings.build_trainer(model_config, mesh, optimizer, train_steps,
                                   teacher_objective, skip_nonfinite, extra_objectives)
  # lazy: the data layer (TensorFlow, seqio, `tasks`) loads when a run starts,
  # so that plan and bench read this module's gin configurables without it;
  # its modules register gin configurables of their own.
  with gin.unlock_config():
    from freelm_jax.training import lifecycle  # pylint: disable=g-import-not-at-top
  return lifecycle.run(trainer, schedule, data, model_dir, train_steps=train_steps,
                       checkpoint_every=checkpoint_every, eval_every=eval_every,
                       log_every=log_every, seed=seed, init_from=init_from)
