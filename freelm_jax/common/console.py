"""What the CLIs show: this project's warnings, a progress bar and the tables.

Libraries' log lines (TensorFlow/XLA C++ probing for CUDA or TPUs, absl and
Python warnings, seqio, orbax) stay off the console; with `log_to_file`, every
INFO-or-above line of every library goes to the model_dir's `train.log`.
"""

import contextlib
import logging
import os
import sys
from typing import Callable, Optional

from absl import logging as absl_logging
import tqdm

from freelm_jax.common import resources

_OWN_DIRS = resources.source_dirs()
_FILE_HANDLER: Optional[logging.Handler] = None


def quiet_environment() -> None:
  """Silences C++ logging of TensorFlow/XLA (CUDA, TPU probing) in this process
  and in the input workers it starts; call before TensorFlow or JAX load."""
  os.environ.setdefault('TF_CPP_MIN_LOG_LEVEL', '3')
  os.environ.setdefault('GRPC_VERBOSITY', 'ERROR')


@contextlib.contextmanager
def stderr_fd_to_devnull():
  """File descriptor 2 to /dev/null meanwhile (C++ code writes there directly)."""
  sys.stderr.flush()
  saved = os.dup(2)
  with open(os.devnull, 'w') as null:
    os.dup2(null.fileno(), 2)
  try:
    yield
  finally:
    os.dup2(saved, 2)
    os.close(saved)


def import_tensorflow_quietly() -> None:
  """Imports TensorFlow (if installed) without its C++ start-up lines (CUDA
  probing), which are logged before absl::InitializeLog and so ignore
  TF_CPP_MIN_LOG_LEVEL. A failing import is left to the caller's own import."""
  quiet_environment()
  if 'tensorflow' in sys.modules:
    return
  with stderr_fd_to_devnull():
    try:
      # lazy: importing TensorFlow quietly is this function's job
      import tensorflow  # pylint: disable=g-import-not-at-top,unused-import
    except Exception:  # pylint: disable=broad-except
      pass


class _Console(logging.Filter):
  """Lets through warnings and errors of this project's code only."""

  def filter(self, record: logging.LogRecord) -> bool:
    return record.levelno >= logging.WARNING and record.pathname.startswith(_OWN_DIRS)


class _NoOrbaxInfo(logging.Filter):
  """Drops orbax's INFO chatter (one checkpoint = dozens of lines)."""

  def filter(self, record: logging.LogRecord) -> bool:
    return record.levelno >= logging.WARNING or '/orbax/' not in record.pathname


def quiet_console() -> None:
  """Keeps library log lines and Python warnings off stderr (this process)."""
  quiet_environment()
  logging.captureWarnings(True)
  root = logging.getLogger()
  handlers = set(root.handlers) | {absl_logging.get_absl_handler()}
  if not root.handlers:  # else the first warning's basicConfig() adds an unfiltered one
    root.addHandler(logging.StreamHandler())
    handlers.update(root.handlers)
  for handler in handlers:
    if handler is not _FILE_HANDLER and not any(isinstance(f, _Console) for f in handler.filters):
      handler.addFilter(_Console())


def log_to_file(path: str) -> None:
  """Sends INFO and above of every logger to `path` (replacing an earlier file)."""
  global _FILE_HANDLER
  root = logging.getLogger()
  if _FILE_HANDLER is not None:
    root.removeHandler(_FILE_HANDLER)
    _FILE_HANDLER.close()
  os.makedirs(os.path.dirname(os.path.abspath(path)), exist_ok=True)
  _FILE_HANDLER = logging.FileHandler(path)
  _FILE_HANDLER.setLevel(logging.INFO)
  _FILE_HANDLER.addFilter(_NoOrbaxInfo())
  _FILE_HANDLER.setFormatter(logging.Formatter(
      '%(asctime)s %(levelname).1s %(name)s %(filename)s:%(lineno)d] %(message)s'))
  root.addHandler(_FILE_HANDLER)
  if root.level > logging.INFO or root.level == logging.NOTSET:
    root.setLevel(logging.INFO)


def _rate(value: Optional[float]) -> str:
  return '-' if not value else f'{value / 1000:.1f}k' if value >= 1000 else f'{value:.0f}'


class Progress:
  """A tqdm bar over the train steps: per-objective loss, tokens/s, ETA and
  the latest evaluation. `write` is a MetricsWriter's, shown on the bar too."""

  def __init__(self, writer, total: int, initial: int, enabled: bool = True):
    self._writer = writer
    self._fields: dict[str, str] = {}
    self._bar = tqdm.tqdm(total=total, initial=initial, disable=not enabled,
                          unit='step', dynamic_ncols=True, file=sys.stderr,
                          mininterval=1.0, desc='train')

  def write(self, row: dict) -> None:
    self._writer.write(row)
    if row.get('kind') == 'train':
      name = row['objective']
      if 'loss' in row:  # absent when every step of the window was skipped.
        self._fields[name] = f"{row['loss']:.3f}"
      self._fields[f'{name} tok/s'] = _rate(row.get('tokens_per_s'))
      self._bar.set_postfix(self._fields, refresh=False)

  def step(self, step: int) -> None:
    self._bar.update(step - self._bar.n)

  def evaluation(self, evaluate: Callable[[], list]) -> list:
    """Runs `evaluate` (-> eval rows); shows its mean accuracy and perplexity."""
    self._bar.set_description('eval')
    rows = evaluate()
    accuracies = [r['accuracy'] for r in rows if r.get('accuracy') is not None]
    if accuracies:
      self._fields['eval acc'] = f'{sum(accuracies) / len(accuracies):.3f}'
    for r in rows:
      if 'perplexity' in r:
        self._fields['eval ppl'] = f"{r['perplexity']:.1f}"
    self._bar.set_description('train')
    self._bar.set_postfix(self._fields)
    return rows

  def __enter__(self):
    return self

  def __exit__(self, *exc):
    self._bar.close()
