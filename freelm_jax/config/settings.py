"""The run's settings as gin knows them: the data and mesh configs, the
model, objective and optimizer constructors, and the checks that the data fits
the model and the mesh, made before any work starts."""

import dataclasses
from typing import Callable, Collection, Mapping, Optional, Sequence

import gin
import jax
import numpy as np

from freelm_jax.common import errors
from freelm_jax.core import network
from freelm_jax.core import objectives as objectives_lib
from freelm_jax.core import packing
from freelm_jax.core import partitioning
from freelm_jax.core import schedules
from freelm_jax.core import trainer as trainer_lib

# Gin-configured constructors (the library modules themselves know no gin).
ModelConfig = gin.external_configurable(network.ModelConfig, module='network')
TeacherObjective = gin.external_configurable(objectives_lib.TeacherObjective, module='models')
LanguageObjective = gin.external_configurable(objectives_lib.LanguageObjective, module='models')
create_optimizer = gin.external_configurable(trainer_lib.create_optimizer, module='trainer')
for _schedule in (*schedules.BUILT_IN, schedules.Cycle):
  gin.external_configurable(_schedule, module='schedules')


# [sep] and [cls], and at least one token each of the instance and the
# proposition; `check_tasks` also requires room for a task's shortest proposition.
MIN_TEACHER_SEQ_LEN = 4


@gin.configurable(module='train_lib')
@dataclasses.dataclass(frozen=True)
class DataConfig:
  """The two input streams and the held-out evaluation tasks."""

  lm_task: str = gin.REQUIRED
  teacher_mixture: str = gin.REQUIRED
  eval_tasks: Sequence[str] = ()
  eval_split: str = 'validation'
  lm_batch_size: int = 32
  teacher_batch_size: int = 64
  lm_seq_len: int = 128
  teacher_seq_len: int = 64
  # 0: each teacher row one proposition, padded to teacher_seq_len; N: rows of
  # N tokens, each packed with several propositions (at least teacher_seq_len).
  teacher_pack_len: int = 0
  eval_batch_size: int = 256
  eval_max_examples: Optional[int] = None  # score only each task's first N examples
  lm_eval_batches: int = 64  # held-out LM batches per evaluation (0 = none)
  eval_probe: bool = False  # also report a bag-of-words probe's accuracy

  def __post_init__(self):
    for name in ('lm_batch_size', 'teacher_batch_size', 'eval_batch_size'):
      errors.check_count(DataConfig, name, getattr(self, name), 1)
    errors.check_count(DataConfig, 'lm_seq_len', self.lm_seq_len, 2,
                       ' (a token and the next one to predict)')
    errors.check_count(DataConfig, 'teacher_seq_len', self.teacher_seq_len,
                       MIN_TEACHER_SEQ_LEN, ' ([sep], [cls] and a token each of the '
                       'instance and the proposition)')
    errors.check_count(DataConfig, 'lm_eval_batches', self.lm_eval_batches, 0)
    errors.check_count(DataConfig, 'teacher_pack_len', self.teacher_pack_len, 0,
                       ' (0: one proposition per row)')
    errors.check(self.teacher_pack_len == 0 or self.teacher_pack_len >= self.teacher_seq_len,
                 DataConfig, 'teacher_pack_len', self.teacher_pack_len,
                 'must be 0 (one proposition per row) or at least {teacher_seq_len}.',
                 teacher_seq_len=(DataConfig, 'teacher_seq_len', self.teacher_seq_len))
    if self.eval_max_examples is not None:
      errors.check_count(DataConfig, 'eval_max_examples', self.eval_max_examples, 1,
                         ' (None: every example)')


@gin.configurable(module='train_lib')
@dataclasses.dataclass(frozen=True)
class MeshConfig:
  """Devices along the mesh axes (data, fsdp, tensor); -1 = the rest."""

  data: int = -1
  fsdp: int = 1
  tensor: int = 1

  def __post_init__(self):
    axes = ('data', 'fsdp', 'tensor')
    for name in axes:
      value = getattr(self, name)
      errors.check(isinstance(value, int) and (value == -1 or value >= 1), MeshConfig,
                   name, value, 'must be -1 (the remaining devices) or at least 1.')
    rest = [name for name in axes if getattr(self, name) == -1]
    if len(rest) > 1:
      raise errors.SettingError(
          MeshConfig, rest[1], -1, 'only one mesh size may be -1 (the remaining '
          'devices), and {other} is.', {'other': (MeshConfig, rest[0], -1)})


def build_trainer(model_config: network.ModelConfig, mesh_config: MeshConfig,
                  optimizer_factory: Callable, train_steps: int,
                  teacher_objective: objectives_lib.TeacherObjective,
                  skip_nonfinite: bool = False,
                  extra_objectives: Sequence[objectives_lib.Objective] = (),
                  ema_decay: float = 0.0,
                  learning_rate_scales: Optional[Mapping[str, float]] = None,
                  ) -> trainer_lib.Trainer:
  """The Trainer for a model, mesh and optimizer; its objectives are 'lm',
  'teacher' and `extra_objectives`, each under its `name`."""
  optimizer, schedule = optimizer_factory(total_steps=train_steps)
  mesh = partitioning.create_mesh(mesh_config.data, mesh_config.fsdp, mesh_config.tensor)
  objectives = {o.name: o for o in (LanguageObjective(), teacher_objective,
                                    *extra_objectives)}
  return trainer_lib.Trainer(network.FreeLM(model_config), optimizer, schedule,
                             objectives, mesh, skip_nonfinite=skip_nonfinite,
                             ema_decay=ema_decay, learning_rate_scales=learning_rate_scales)


def abstract_batches(data, sharding) -> dict:
  """ShapeDtypeStructs of one global batch per stream (input_pipeline's layout)."""
  spec = lambda shape, dtype: jax.ShapeDtypeStruct(shape, np.dtype(dtype), sharding=sharding)
  lm = (data.lm_batch_size, data.lm_seq_len)
  rows = (data.teacher_batch_size,)
  if data.teacher_pack_len:  # packed rows: several propositions each
    row, slots = rows + (data.teacher_pack_len,), rows + (packing.max_per_row(
        data.teacher_pack_len),)
    teacher = {'tokens': spec(row, 'int32'), 'positions': spec(row, 'int32'),
               'segment_ids': spec(row, 'int32'), 'cls_index': spec(slots, 'int32')}
  else:
    slots = rows
    teacher = {'tokens': spec(rows + (data.teacher_seq_len,), 'int32'),
               'lengths': spec(rows, 'int32')}
  teacher |= {'truth': spec(slots, 'int32'), 'task_type': spec(slots, 'int32'),
              'weights': spec(slots, 'float32')}
  return {
      'lm': {'tokens': spec(lm, 'int32'), 'targets': spec(lm, 'int32'),
             'positions': spec(lm, 'int32'), 'segment_ids': spec(lm, 'int32'),
             'weights': spec(lm, 'float32')},
      'teacher': teacher,
  }


def check_fit(data: DataConfig, trainer: trainer_lib.Trainer,
              schedule: schedules.Schedule) -> None:
  """The trainer has the schedule's objectives, and the data fits the model
  (`check_lengths`) and the mesh (`check_batch_sizes`)."""
  trainer.check_schedule(schedule)
  check_lengths(data, trainer.module.config, trainer.objectives.values())
  check_batch_sizes(data, trainer.mesh)


def check_lengths(data: DataConfig, model_config: network.ModelConfig,
                  objectives: Collection[objectives_lib.Objective] = ()) -> None:
  """Both sequence lengths fit the model's context (a position past it has no
  embedding), and the LM objective's logits chunk divides its length."""
  for name in ('lm_seq_len', 'teacher_seq_len', 'teacher_pack_len'):
    errors.check(getattr(data, name) <= model_config.max_len, DataConfig, name,
                 getattr(data, name), "must be at most the model's context, {max_len}.",
                 max_len=(network.ModelConfig, 'max_len', model_config.max_len))
  for objective in objectives:
    chunk = getattr(objective, 'logits_chunk', 0)
    if isinstance(objective, objectives_lib.LanguageObjective) and 0 < chunk < data.lm_seq_len:
      errors.check(data.lm_seq_len % chunk == 0, objectives_lib.LanguageObjective, 'logits_chunk',
                   chunk, 'must divide {lm_seq_len}.',
                   lm_seq_len=(DataConfig, 'lm_seq_len', data.lm_seq_len))


def check_batch_sizes(data: DataConfig, mesh) -> None:
  """Every global batch must split evenly over the data-parallel axes."""
  for name, size in (('LM_BATCH_SIZE', data.lm_batch_size),
                     ('TEACHER_BATCH_SIZE', data.teacher_batch_size),
                     ('train_lib.DataConfig.eval_batch_size', data.eval_batch_size)):
    partitioning.check_batch_size(name, size, mesh)
