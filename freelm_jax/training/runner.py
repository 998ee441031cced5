"""`train`, the gin configurable a run starts from (`train_lib.train`): its
settings checked and its trainer built, then `lifecycle.run`. Without the data
layer, `trainer_without_data` builds the same trainer for plan and bench.
"""

import inspect
import sys
from typing import Any, Callable, Mapping, Optional, Sequence, Union

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
  schedule = schedules.get(bound_to_train('objective_schedule'))
  check_ema_decay(bound_to_train('ema_decay'))
  trainer = settings.build_trainer(
      model_config, settings.MeshConfig(), settings.create_optimizer, train_steps,
      bound_to_train('teacher_objective'),
      extra_objectives=bound_to_train('extra_objectives'),
      ema_decay=bound_to_train('ema_decay'))  # its average is state, as in the run
  settings.check_fit(data, trainer, schedule)
  return model_config, data, trainer, schedule


def bound_to_train(name: str) -> Any:
  """The value gin binds to `train`'s argument `name`, else its default."""
  bound = gin.get_bindings(train)
  return bound[name] if name in bound else inspect.signature(train).parameters[name].default


def check_run(train_steps: int, checkpoint_every: int, eval_every: int,
              log_every: int, ema_decay: float = 0.0) -> None:
  """Raises SettingError for the first of `train`'s own settings out of range."""
  errors.check_count(train, 'train_steps', train_steps, 1)
  errors.check_count(train, 'checkpoint_every', checkpoint_every, 1,
                     ' (the last step is always saved)')
  errors.check_count(train, 'eval_every', eval_every, 0, ' (0: only the final evaluation)')
  errors.check_count(train, 'log_every', log_every, 1)
  check_ema_decay(ema_decay)


def check_ema_decay(ema_decay: float) -> None:
  errors.check(isinstance(ema_decay, (int, float)) and 0 <= ema_decay < 1, train,
               'ema_decay', ema_decay, 'must be at least 0 (no average) and below 1.')


def check_learning_rate_scales(scales: Mapping[str, float],
                               objective_names: Sequence[str]) -> None:
  """Each key of `scales` is an objective of the run, each value above 0."""
  for name, scale in scales.items():
    errors.check(name in objective_names, train, 'learning_rate_scales', dict(scales),
                 f'names objective {name!r}; the objectives are '
                 f'{", ".join(objective_names)}.')
    errors.check(isinstance(scale, (int, float)) and not isinstance(scale, bool)
                 and scale > 0, train, 'learning_rate_scales', dict(scales),
                 f'must map each objective to a number above 0 ({name!r}: {scale!r}).')


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
    ema_decay: float = 0.0,
    learning_rate_scales: Optional[Mapping[str, float]] = None,
) -> list[dict]:
  """Trains FreeLM on its schedule's objectives; returns the final evaluation rows.

  `objective_schedule` (gin `OBJECTIVE_SCHEDULE`): a schedule's name or a
  `schedules.Schedule`; `extra_objectives`: objectives beside 'lm' and
  'teacher' (each under its `name`) for the schedule to use.
  `init_from` (gin `INIT_FROM`): weights for a model_dir with no checkpoint yet.
  `skip_nonfinite`: skip (do not apply) updates with a non-finite loss, gradient
  or parameters and count them as `skipped_steps`, instead of stopping the run.
  `ema_decay` (gin `EMA_DECAY`) > 0: keep an exponential moving average of the
  weights, which evaluation and every later reader of the checkpoint use.
  `learning_rate_scales`: objective -> factor on its learning rate, e.g.
  {'teacher': 2.0}.
  On SIGTERM the run saves a checkpoint at the current step and returns []
  (`loop.train`).
  """
  check_run(train_steps, checkpoint_every, eval_every, log_every, ema_decay)
  schedule = schedules.get(objective_schedule)
  check_learning_rate_scales(learning_rate_scales or {}, [
      'lm', teacher_objective.name, *(o.name for o in extra_objectives)])
  trainer = settings.build_trainer(model_config, mesh, optimizer, train_steps,
                                   teacher_objective, skip_nonfinite, extra_objectives,
                                   ema_decay, learning_rate_scales)
  # lazy: the data layer (TensorFlow, seqio, `tasks`) loads when a run starts,
  # so that plan and bench read this module's gin configurables without it;
  # its modules register gin configurables of their own.
  with gin.unlock_config():
    from freelm_jax.training import lifecycle  # pylint: disable=g-import-not-at-top
  return lifecycle.run(trainer, schedule, data, model_dir, train_steps=train_steps,
                       checkpoint_every=checkpoint_every, eval_every=eval_every,
                       log_every=log_every, seed=seed, init_from=init_from)
