"""What the command-line tools share: the gin and multi-host flags (T5X
conventions), the multi-host start, and how an error ends a command.

`--gin.NAME=VALUE` is shorthand for `--gin_bindings=NAME=VALUE`. A user's
mistake (`errors.UserError`) ends a command with one line; anything else keeps
its traceback, as every error does with `--debug` or FREELM_DEBUG=1.
"""

import atexit
import os
import sys
import traceback
from typing import Callable, NoReturn, Optional, Sequence

from absl import app
from absl import flags
import gin

from freelm_jax.common import console
from freelm_jax.common import errors
from freelm_jax.config import gin_utils
from freelm_jax.core import partitioning


def quiet_library_logs() -> None:
  """Keeps the libraries' log lines off the console (`console.quiet_console`)."""
  console.quiet_console()


def define_flags() -> None:
  flags.DEFINE_multi_string('gin_file', [], 'Gin files, applied in order.')
  flags.DEFINE_multi_string('gin_bindings', [], 'Extra gin bindings (NAME=VALUE); '
                            '--gin.NAME=VALUE is short for one.')
  flags.DEFINE_multi_string(
      'module_import', [], 'Modules to import first (e.g. to register tasks).')
  # Multi-host (GPU clusters, tests); Cloud TPU VMs need none of these.
  flags.DEFINE_string('coordinator_address', None,
                      'HOST:PORT of process 0, the JAX coordinator.')
  flags.DEFINE_integer('num_processes', None, 'Processes in the run.')
  flags.DEFINE_integer('process_id', None, 'This process, 0 .. num_processes-1.')
  flags.DEFINE_integer('distributed_timeout', 300,
                       'Seconds to wait for every process to join.')
  flags.DEFINE_bool('debug', False, 'Show the traceback of every error, the one-line '
                    'errors of bad settings and data too (also: FREELM_DEBUG=1).')


def initialize_distributed() -> None:
  """Joins the multi-host run the flags name (or a TPU VM's; else one process)."""
  f = flags.FLAGS
  partitioning.initialize_distributed(f.coordinator_address, f.num_processes,
                                      f.process_id, f.distributed_timeout)


def rewrite_gin_args(argv: Sequence[str]) -> list[str]:
  """Turns `--gin.NAME=VALUE` into `--gin_bindings=NAME=VALUE`."""
  out = []
  for arg in argv:
    if arg.startswith('--gin.'):
      out.append('--gin_bindings=' + arg[len('--gin.'):])
    else:
      out.append(arg)
  return out


def run_cli(main: Callable[[list[str]], object]) -> NoReturn:
  """`app.run(main)` with the `--gin.NAME=VALUE` flags, then a quick exit: the
  exit handlers run (the run has closed its files, checkpoints and workers by
  then), the interpreter's teardown of TensorFlow's modules (seconds of CPU
  after every command) does not. A bug's traceback is printed first."""
  try:
    app.run(main, argv=rewrite_gin_args(sys.argv))
    code = 0
  except SystemExit as e:
    code = e.code
  except Exception:  # pylint: disable=broad-except
    traceback.print_exc()
    code = 1
  if isinstance(code, str):  # sys.exit('error: ...')
    print(code, file=sys.stderr)
    code = 1
  atexit._run_exitfuncs()  # pylint: disable=protected-access
  sys.stdout.flush()
  sys.stderr.flush()
  os._exit(code or 0)  # pylint: disable=protected-access


def debug() -> bool:
  """Whether --debug (where the command defines it) or FREELM_DEBUG asks for
  every error's traceback."""
  flag = flags.FLAGS['debug'].value if 'debug' in flags.FLAGS else False
  return bool(flag) or errors.debug()


def run_or_exit(fn: Callable[[], object]) -> object:
  """Runs `fn`; a user's mistake (`errors.UserError`: a bad flag, setting,
  file or data) exits with one line. Anything else is a bug and keeps its
  traceback, as every error does with `debug()`."""
  if debug():
    os.environ['FREELM_DEBUG'] = '1'  # for the input workers too
  try:
    return fn()
  except Exception as e:  # pylint: disable=broad-except
    line = user_error_line(e)
    if line is None or debug():
      raise
    errors.exit_with(line)


def user_error_line(error: BaseException) -> Optional[str]:
  """The one line of a user's mistake, without gin's notes, its settings named
  as the user set them (`setting_name`); None for anything else."""
  error = _unwrapped(error)
  if isinstance(error, errors.SettingError):
    return error.line(gin_utils.setting_name)
  return errors.user_message(error)


def _unwrapped(error: BaseException) -> BaseException:
  """The error itself, where gin re-raised it with "In call to configurable
  ..." (or a file location) appended.

  gin raises a proxy instead: an instance of a subclass of the error's class,
  made by `gin.utils.augment_exception_message_and_reraise` and raised while
  the original is handled, so the original is its `__context__`.
  """
  while (getattr(type(error).__init__, '__module__', None) == gin.utils.__name__
         and error.__context__ is not None):
    error = error.__context__
  return error
