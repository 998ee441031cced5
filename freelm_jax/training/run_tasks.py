"""The tasks a run names: registered, fitting TEACHER_SEQ_LEN, and their type ids.

A task type (e.g. 'nli') is a label of the task-aware head; its id is its
index in the run's order. A checkpoint records the order, and a resumed run
keeps it and appends the types it adds (`task_type_order`).
"""

from typing import Collection, Optional, Sequence

import seqio

from freelm_jax.common import errors
from freelm_jax.core import network
import tasks


def check_tasks(data) -> None:
  """Every task `data` (a `train_lib.DataConfig`) names is registered, and
  TEACHER_SEQ_LEN leaves room for some of the instance beside each teacher
  task's shortest proposition (else the instance is cut away: `tasks.propositions`)."""
  config = type(data)  # the errors name the settings of train_lib.DataConfig
  names = set(seqio.TaskRegistry.names()) | set(seqio.MixtureRegistry.names())
  for name in ('lm_task', 'teacher_mixture'):
    errors.check(getattr(data, name) in names, config, name, getattr(data, name),
                 'no task or mixture of that name is registered.')
  teacher = set(tasks.registered_teacher_tasks())
  for task in data.eval_tasks:
    errors.check(task in teacher, config, 'eval_tasks', tuple(data.eval_tasks),
                 f'{task!r} is not a registered teacher task.')
  for task in dict.fromkeys(tasks.mixture_tasks(data.teacher_mixture) + list(data.eval_tasks)):
    shortest = tasks.propositions.shortest_proposition(task)
    errors.check(
        data.teacher_seq_len >= shortest + 3, config, 'teacher_seq_len',
        data.teacher_seq_len, f'must be at least {shortest + 3}: [sep], [cls], the '
        f"shortest proposition of task {task!r} ({shortest} tokens) and a token of "
        'the instance.')


def trained_task_types(mixture: str) -> list[str]:
  """Task types of the teacher tasks in a mixture (or a single task)."""
  return sorted({tasks.get_teacher_task(n).task_type for n in tasks.mixture_tasks(mixture)})


def run_task_types(teacher_mixture: str, eval_tasks: Sequence[str]) -> set[str]:
  """Task types of the teacher mixture's tasks and of the eval tasks."""
  return set(trained_task_types(teacher_mixture)) | {
      tasks.get_teacher_task(name).task_type for name in eval_tasks}


def task_type_order(in_run: Collection[str],
                    recorded: Optional[Sequence[str]] = None) -> list[str]:
  """Task-type ids: a checkpoint's `recorded` order, then the run's other types
  (`in_run`) in registration order. Types registered but not used by the run
  (e.g. by other tasks imported in the same process) get no id here."""
  order = list(recorded or [])
  return order + [t for t in tasks.propositions.task_types()
                  if t in in_run and t not in order]


def check_task_types(model_config: network.ModelConfig, types: Sequence[str]) -> None:
  """The task-aware head must have a label for every task type (`types` in id order)."""
  if len(types) > model_config.head_labels[1]:
    raise errors.ConfigError(
        f'Task type {types[-1]!r} has id {len(types) - 1} but the '
        f'task-aware head has {model_config.head_labels[1]} labels; raise '
        f'network.ModelConfig.head_labels.')
