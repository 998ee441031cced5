"""Errors a user can fix, and how the entry points report them.

A `UserError` is the user's mistake (a setting, a file, the data, a
checkpoint, a run that diverged or did not fit): every command-line tool ends
on one with one line, `error: ...`, on stderr and exit status 1. Any other
error is a bug and keeps its traceback; `--debug` (or FREELM_DEBUG=1) keeps
it for user errors too (`cli.run_or_exit`). `Interrupted` is no error
of the user's: it ends an evaluation that a stop request cut short. Nothing
heavy is imported here.
"""

import contextlib
import math
import os
import re
import sys
from typing import Any, Callable, NoReturn, Optional


class UserError(ValueError):
  """The user's mistake; the message names the setting, file or line at fault."""


class ConfigError(UserError):
  """A bad gin file, binding, flag, setting or module; the message names it."""


class SettingError(ConfigError):
  """Parameter `name` of `owner` (a class or function) is out of range.

  `allowed` says what is allowed; a `{key}` in it names another setting,
  `refs[key]` = (owner, name, value). The message names each setting as the
  code does (`ModelConfig.num_heads`); `cli.user_error_line` names it as
  the user set it (the gin macro or binding).
  """

  def __init__(self, owner: Any, name: str, value: Any, allowed: str,
               refs: Optional[dict[str, tuple[Any, str, Any]]] = None):
    self.owner, self.name, self.value, self.allowed = owner, name, value, allowed
    self.refs = dict(refs or {})
    super().__init__(self.line(code_name))

  def line(self, name_of: Callable[[Any, str], str]) -> str:
    """`NAME=VALUE: allowed`, each setting named by `name_of(owner, name)`."""
    refs = {key: f'{name_of(owner, name)}={value!r}'
            for key, (owner, name, value) in self.refs.items()}
    return f'{name_of(self.owner, self.name)}={self.value!r}: {self.allowed.format(**refs)}'

  def __reduce__(self):  # pickles with its fields, not its message
    return type(self), (self.owner, self.name, self.value, self.allowed, self.refs)


class DataError(UserError):
  """Bad input data; the message names the file and line."""


class CheckpointError(UserError):
  """A checkpoint that cannot be read, mapped, used or written; the message names it."""


class PipelineError(UserError):
  """An input worker's pipeline failed on a user error; the message is its one line."""


class NonFiniteError(UserError):
  """A step produced a non-finite loss, gradient or parameters."""


class OutOfMemoryError(UserError):
  """A step did not fit in accelerator memory; the message names the config."""


class Interrupted(Exception):
  """Work stopped between two batches because the run was asked to stop
  (SIGTERM), having written nothing. Not a user's mistake: the training loop
  catches it."""


def code_name(owner: Any, name: str) -> str:
  """`Owner.name`: a parameter as the code names it."""
  return f'{getattr(owner, "__qualname__", owner)}.{name}'


def check(ok: bool, owner: Any, name: str, value: Any, allowed: str, **refs) -> None:
  """Raises SettingError(owner, name, value, allowed, refs) unless `ok`."""
  if not ok:
    raise SettingError(owner, name, value, allowed, refs)


def _is_int(value: Any) -> bool:
  return isinstance(value, int) and not isinstance(value, bool)


def check_count(owner: Any, name: str, value: Any, minimum: int, note: str = '') -> None:
  """A whole number of at least `minimum`; `note` says why, e.g. ' (0: never)'."""
  whole = _is_int(value)
  check(whole and value >= minimum, owner, name, value,
        f'must be {"at least" if whole else "a whole number, at least"} {minimum}{note}.')


def check_number(owner: Any, name: str, value: Any, low: float, high: float = math.inf,
                 low_open: bool = False) -> None:
  """A finite number in [low, high] (or (low, high] with `low_open`)."""
  finite = (isinstance(value, (int, float)) and not isinstance(value, bool)
            and math.isfinite(value))
  ok = finite and low <= value <= high and not (low_open and value == low)
  if high < math.inf:
    span = f'between {low:g} and {high:g}'
  else:
    span = f'{"above" if low_open else "at least"} {low:g}'
  check(ok, owner, name, value, f'must be {"" if finite else "a finite number "}{span}.')


def _user_error_names() -> list[str]:
  """The names of UserError and of every subclass of it."""
  names, pending = [], [UserError]
  while pending:
    cls = pending.pop()
    names.append(cls.__name__)
    pending.extend(cls.__subclasses__())
  return names


def error_in_tf_message(error: BaseException) -> Optional[str]:
  """The message of a UserError that TensorFlow re-raised as its own error.

  A Python exception raised inside a tf.data function (`tf.numpy_function`,
  `from_generator`) crosses TensorFlow's C++ runtime as text: the
  `tf.errors.OpError` that arrives keeps neither the exception nor its type,
  only `DataError: message` (or a `tf.debugging.Assert`'s `[DataError: ...]`)
  inside its own message. Matching that text is the only way to tell it.
  """
  names = '|'.join(map(re.escape, _user_error_names()))
  match = re.search(rf'(\[?)\b(?:{names}): (.*)', str(error))
  if not match:
    return None
  text = match.group(2).strip()
  if match.group(1):  # a TF assertion's message, "[DataError: ...]"
    text = text.removesuffix(']').replace("\\'", "'")
  return text


def user_message(error: BaseException) -> Optional[str]:
  """The one line of a user's mistake, else None (a bug: keep its traceback)."""
  if isinstance(error, UserError):
    return ' '.join(str(error).split())
  if type(error).__module__.startswith('tensorflow'):
    return error_in_tf_message(error)
  return None


def debug() -> bool:
  """Whether FREELM_DEBUG asks for every error's traceback."""
  return os.environ.get('FREELM_DEBUG', '').lower() not in ('', '0', 'false', 'no')


def exit_with(message: object) -> NoReturn:
  """Exits with the one line `error: message`."""
  sys.exit(f'error: {message}')


@contextlib.contextmanager
def exit_on(*error_types: type[BaseException]):
  """Turns an error of `error_types` raised in the block into `exit_with`
  (except with `debug()`)."""
  try:
    yield
  except error_types as e:
    if debug():
      raise
    exit_with(e)


def exit_now(message: object) -> NoReturn:
  """`exit_with` from any thread, even while the main one is blocked in C++."""
  print(f'error: {message}', file=sys.stderr, flush=True)
  os._exit(1)  # pylint: disable=protected-access
