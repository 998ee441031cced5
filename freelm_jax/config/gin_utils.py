"""Gin parsing: gin files found by name (shipped or local, includes beside
their file), bindings checked (a NAME without a dot must be a macro that the
gin files define, so a typo such as `--gin.TRAIN_STEPZ=10` fails instead of
silently defining a new macro), settings left `%gin.REQUIRED` named with their
file's comment, and the task registrations a config makes, recorded for the
input workers to repeat.
"""

import contextlib
import functools
import importlib
import inspect
import os
import re
import sys
from typing import Callable, Optional, Sequence

import gin

from freelm_jax.common import errors
from freelm_jax.common import resources
from freelm_jax.common import storage


# What input workers repeat to rebuild this process's tasks (`prefetch.worker_setup`):
# the modules imported through --module_import, and the calls the gin config
# made to registering configurables (`registering_configurable`; `parse`
# starts a new list).
_IMPORTED_MODULES: list[str] = []
_GIN_REGISTRATIONS: list[tuple[str, dict]] = []


ConfigError = errors.ConfigError


# The data layer's gin names (registered by tasks/gin_configurables.py). Where
# `tasks` is not imported (`parse(skip_failed_imports=True)`: plan, bench),
# gin skips their bindings, and a value that calls one becomes None.
DATA_CONFIGURABLES = (
    'glue.local_eval_tasks', 'glue.local_mixture', 'glue.register_tfds',
    'glue.tfds_eval_tasks', 'language.stream', 'tasks.register',
    'vocabulary.data_file', 'vocabulary.gpt2_dir')


def import_modules(modules: Sequence[str]) -> None:
  """Imports user modules (they register tasks); names the one that fails."""
  if os.getcwd() not in sys.path:
    sys.path.insert(0, os.getcwd())
  for module in modules:
    try:
      importlib.import_module(module)
    except Exception as e:  # pylint: disable=broad-except
      raise ConfigError(f'--module_import={module}: {type(e).__name__}: {e}') from e
    if module not in _IMPORTED_MODULES:
      _IMPORTED_MODULES.append(module)


def imported_modules() -> tuple[str, ...]:
  """The modules `import_modules` imported, in order."""
  return tuple(_IMPORTED_MODULES)


def registrations() -> tuple[tuple[str, dict], ...]:
  """The task registrations the current gin config made, in order."""
  return tuple(_GIN_REGISTRATIONS)


def record_registration(function: str, kwargs: dict) -> None:
  """Records a task registration made from gin, `function(**kwargs)` (a
  dotted path, picklable kwargs), for the input workers to repeat."""
  call = (function, dict(kwargs))
  if call not in _GIN_REGISTRATIONS:
    _GIN_REGISTRATIONS.append(call)


def registering_configurable(function: Callable, module: str,
                             name: Optional[str] = None) -> Callable:
  """Makes `function`, which registers tasks, the gin configurable
  `module.name`; each call gin makes is recorded (`record_registration`), so
  its arguments must be plain data. Called directly, `function` records nothing."""
  signature = inspect.signature(function)
  path = f'{function.__module__}.{function.__qualname__}'

  @functools.wraps(function)
  def call(*args, **kwargs):
    result = function(*args, **kwargs)
    record_registration(path, signature.bind(*args, **kwargs).arguments)
    return result

  call.__signature__ = signature  # gin checks bindings against the parameters
  return gin.external_configurable(call, name=name or function.__name__, module=module)


def _is_remote_file(path: str) -> bool:
  return storage.is_remote(path) and storage.resolve(path).exists()


# gin reads remote files (a gs:// model_dir's config.gin) through etils.epath.
gin.config.register_file_reader(lambda path: storage.resolve(path).open(), _is_remote_file)

# Directories of the gin files being parsed, the innermost (including) file last.
_PARSING_DIRS: list[str] = []
# The local gin files `parse` read, includes too, in the order read.
_PARSED_FILES: list[str] = []


def find_gin_file(path: str) -> Optional[str]:
  """A local gin file: absolute, else relative to the including file's
  directory, the shipped gin/ directory, the working directory, then among
  the shipped files by its `gin/...` name (`resources.shipped`)."""
  if os.path.isabs(path):
    return path if os.path.isfile(path) else None
  for base in _PARSING_DIRS[-1:] + [resources.gin_dir(), os.getcwd()]:
    candidate = os.path.join(base, path)
    if os.path.isfile(candidate):
      return os.path.abspath(candidate)
  found = resources.shipped(path)
  return found if found and os.path.isfile(found) else None


@contextlib.contextmanager
def _open_gin_file(path: str):
  """Opens a gin file; its includes are looked up from its directory while it parses."""
  found = find_gin_file(path)
  _PARSING_DIRS.append(os.path.dirname(found))
  _PARSED_FILES.append(found)
  try:
    with open(found) as f:
      yield f
  finally:
    _PARSING_DIRS.pop()


def _install_file_reader() -> None:
  """Makes `find_gin_file` gin's first reader, and drops gin's package-resource
  reader: it takes any folder on sys.path named like an include's directory
  (`runs/`, `data/`, `models/` in the working directory) for a package, logs
  ERROR 'Path not found' for every include it misses, and crashes on a
  namespace package. Gin files here are files, never package resources."""
  readers = gin.config._FILE_READERS  # pylint: disable=protected-access
  readers[:] = [r for r in readers if r[0] is not gin.resource_reader.system_path_reader]
  if readers[0][0] is not _open_gin_file:
    readers.insert(0, (_open_gin_file, lambda path: find_gin_file(path) is not None))


_install_file_reader()


def _resolve(path: str) -> str:
  """A gin file as given (local or remote), else a shipped config by its
  `gin/...` name or its name inside gin/ (`base.gin`, `models/tiny.gin`)."""
  if storage.is_remote(path):
    if _is_remote_file(path):
      return path
    raise ConfigError(f'--gin_file={path}: no such file.')
  for candidate in (path, resources.shipped(path),
                    None if os.path.isabs(path) else os.path.join(resources.gin_dir(), path)):
    if candidate and os.path.isfile(candidate):
      return os.path.abspath(candidate)
  raise ConfigError(f'--gin_file={path}: no such file (shipped configs are in '
                    f'{resources.gin_dir()}).')


def parse(gin_files: Sequence[str], bindings: Sequence[str],
          skip_failed_imports: bool = False, unread_macros: Sequence[str] = ()) -> None:
  """Parses gin files then bindings; every error names its file or binding.

  With `skip_failed_imports`, an `import` in a gin file that fails is skipped
  (plan.py blocks the TensorFlow-importing `tasks` this way), and so are the
  data layer's configurables (`DATA_CONFIGURABLES`). A setting left
  `%gin.REQUIRED` is a ConfigError (`_check_required`), except the macros in
  `unread_macros`, which the caller never reads: those are bound to None.
  """
  # A list makes gin skip failed imports and the configurables it names;
  # other unknown configurables still fail.
  skip = ['<failed imports only>', *DATA_CONFIGURABLES] if skip_failed_imports else False
  _GIN_REGISTRATIONS.clear()  # the registrations of this config only
  _PARSED_FILES.clear()
  for path in gin_files:
    try:
      gin.parse_config_file(_resolve(path), skip_unknown=skip)
    except ConfigError:
      raise
    except Exception as e:  # pylint: disable=broad-except
      raise ConfigError(f'--gin_file={path}: {_one_line(e)}') from e
  for binding in bindings:
    name = binding.split('=', 1)[0].strip()
    if '=' not in binding:
      raise ConfigError(f'--gin_bindings={binding}: expected NAME=VALUE.')
    if '.' not in name and '/' not in name:
      try:
        gin.query_parameter(f'%{name}')
      except ValueError:
        raise ConfigError(
            f'--gin.{name}: no gin file defines the macro {name}.') from None
    try:
      gin.parse_config(binding)
    except Exception as e:  # pylint: disable=broad-except
      raise ConfigError(f'--gin_bindings={binding}: {_one_line(e)}') from e
  if skip_failed_imports:
    _unbind_skipped()
  for name in set(unread_macros) & set(_unset_required()):
    gin.bind_parameter((name, 'gin.macro', 'value'), None)
  _check_required()
  gin.finalize()


def _unbind_skipped() -> None:
  """Binds None where a value calls a skipped configurable (gin.finalize
  rejects such a value); nothing reads the data layer without `tasks`."""
  # pylint: disable=protected-access
  for (scope, selector), values in list(gin.config._CONFIG.items()):
    for param, value in list(values.items()):
      if any(isinstance(v, gin.config._UnknownConfigurableReference)
             for v in gin.config._iterate_flattened_values(value)):
        gin.bind_parameter((scope, selector, param), None)


def parsed_files() -> list[str]:
  """The local gin files the last `parse` read, includes too, in order."""
  return list(_PARSED_FILES)


def _unset_required() -> list[str]:
  """Settings still `%gin.REQUIRED`: a macro by its name, else its binding key."""
  unset = []
  # gin's own check (`find_missing_overrides_hook`, run by `gin.finalize`)
  # names only the binding key, e.g. `INIT_FROM/macro.value`; this is its test.
  for (scope, selector), values in gin.config._CONFIG.items():  # pylint: disable=protected-access
    for param, value in values.items():
      if (isinstance(value, gin.config.ConfigurableReference)
          and value.configurable.wrapped is gin.config._retrieve_constant  # pylint: disable=protected-access
          and value.scoped_configurable_fn() is gin.REQUIRED):
        unset.append(scope if selector == 'gin.macro' else
                     f'{scope}/{selector}.{param}'.lstrip('/'))
  return unset


def _check_required() -> None:
  """Raises a ConfigError for the first setting left `%gin.REQUIRED`: one line
  naming it and where it is required, with what that gin file's comment on it
  says (the comment ending its line, else the comment lines right above it)."""
  unset = _unset_required()
  if not unset:
    return
  name = unset[0]
  where, comment = _required_comment(name)
  advice = comment or f'set it with --gin.{name}=VALUE.'
  raise ConfigError(f'{name} is required{f" by {where}" if where else ""}: {advice}')


def _required_comment(name: str) -> tuple[Optional[str], str]:
  """('file:line', comment) of the last `name = %gin.REQUIRED` line parsed."""
  pattern = re.compile(rf'{re.escape(name)}\s*=\s*%gin\.REQUIRED\s*(#.*)?$')
  for path in reversed(_PARSED_FILES):
    with open(path) as f:
      lines = f.read().splitlines()
    for number in reversed(range(len(lines))):
      match = pattern.match(lines[number])
      if match:
        above = number
        while not match.group(1) and above > 0 and lines[above - 1].startswith('#'):
          above -= 1
        comment = lines[above:number] + [match.group(1) or '']
        return f'{resources.shown(path)}:{number + 1}', ' '.join(l.lstrip('#').strip() for l in comment).strip()
  return None, ''


def _one_line(error: Exception) -> str:
  return ' '.join(str(error).split())


def setting_name(owner: object, name: str) -> str:
  """A parameter as the user sets it: the gin macro bound to it (`TRAIN_STEPS`;
  through macros bound to macros), else its binding (`train_lib.train.log_every`).
  `owner` is the class or function whose parameter it is."""
  configurable = gin.config._inverse_lookup(owner)  # pylint: disable=protected-access
  if configurable is None:
    return errors.code_name(owner, name)
  value = gin.get_bindings(owner, resolve_references=False).get(name)
  macro = None
  for _ in range(10):  # a macro's value may be another macro
    if not (isinstance(value, gin.config.ConfigurableReference)
            and value.configurable.selector == 'gin.macro' and value.evaluate):
      break
    macro = '/'.join(value.scopes)
    value = gin.get_bindings(f'{macro}/gin.macro', resolve_references=False,
                             inherit_scopes=False).get('value')
  return macro or f'{configurable.selector}.{name}'
