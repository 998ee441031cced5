"""Objective schedules: which objective trains at each step.

A schedule names the objectives it uses (keys of `Trainer.objectives`) and
picks one of them per step, counting steps from 0. A subclass with a `name` is
registered under it, so the gin macro `OBJECTIVE_SCHEDULE = '<name>'` selects
it; gin can also bind an instance, e.g.
`train_lib.train.objective_schedule = @schedules.Parity()`.
"""

import abc
from typing import Sequence, Union

from freelm_jax.common import errors

_REGISTRY: dict[str, type['Schedule']] = {}


class Schedule(abc.ABC):
  """Which objective trains at each step (counted from 0)."""

  name: str = ''  # the OBJECTIVE_SCHEDULE name; registered when set

  def __init_subclass__(cls, **kwargs):
    super().__init_subclass__(**kwargs)
    if cls.__dict__.get('name'):
      _REGISTRY[cls.name] = cls

  @property
  @abc.abstractmethod
  def objectives(self) -> tuple[str, ...]:
    """The objectives the schedule uses, each once."""

  @abc.abstractmethod
  def objective(self, step: int) -> str:
    """The objective that trains at `step`."""

  def counts(self, num_steps: int) -> dict[str, int]:
    """How many of the first `num_steps` steps each objective took."""
    counts = dict.fromkeys(self.objectives, 0)
    for step in range(num_steps):
      counts[self.objective(step)] += 1
    return counts


class Cycle(Schedule):
  """Repeats `pattern`: step s trains `pattern[s % len(pattern)]`."""

  def __init__(self, pattern: Sequence[str]):
    if not pattern:
      raise errors.ConfigError('A Cycle schedule needs at least one objective.')
    self.pattern = tuple(pattern)

  @property
  def objectives(self) -> tuple[str, ...]:
    return tuple(dict.fromkeys(self.pattern))

  def objective(self, step: int) -> str:
    return self.pattern[step % len(self.pattern)]

  def counts(self, num_steps: int) -> dict[str, int]:
    cycles, rest = divmod(num_steps, len(self.pattern))
    return {o: cycles * self.pattern.count(o) + self.pattern[:rest].count(o)
            for o in self.objectives}


class Parity(Cycle):
  """Even steps (0, 2, ...) train language, odd steps the teacher signal."""

  name = 'parity'

  def __init__(self):
    super().__init__(('lm', 'teacher'))


class LMOnly(Cycle):
  """Language steps only."""

  name = 'lm_only'

  def __init__(self):
    super().__init__(('lm',))


class TeacherOnly(Cycle):
  """Teacher steps only."""

  name = 'teacher_only'

  def __init__(self):
    super().__init__(('teacher',))


BUILT_IN = (Parity, LMOnly, TeacherOnly)


def names() -> tuple[str, ...]:
  """The registered schedule names."""
  return tuple(_REGISTRY)


def from_name(name: str) -> Schedule:
  """The registered schedule called `name`."""
  if name not in _REGISTRY:
    raise errors.ConfigError(f'OBJECTIVE_SCHEDULE={name!r} is not one of {", ".join(_REGISTRY)}.')
  return _REGISTRY[name]()


def get(schedule: Union[str, Schedule]) -> Schedule:
  """`schedule` itself, or the registered schedule of that name."""
  return schedule if isinstance(schedule, Schedule) else from_name(schedule)
