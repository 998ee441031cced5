"""Runs an input pipeline in its own process and hands its batches over.

Why a process: our pipelines call Python inside tf.data (the HF tokenizer,
JSONL readers), and TensorFlow deadlocks when an iterator with such calls in
flight is destroyed while the destroying thread holds the GIL (at exit, or
when a run stops early). A worker process is simply terminated instead; it
also keeps tf.data's threads from competing with the train step for the GIL.

A worker starts from nothing but its start arguments: the pipeline function
and its keyword arguments, and a `WorkerSetup` naming what rebuilds the
parent's tasks. Task-type ids are decided by the parent and passed in the
pipeline's arguments; nothing travels through the environment. Workers fork
from a server that has imported TensorFlow and the built-in tasks once
(`worker_preload`), so starting one costs a fork, not an import of TensorFlow.
A command starts that server as a fork of itself (`start_server_by_fork`),
which spares the server its own import of TensorFlow, seqio and the tasks.
"""

import dataclasses
import importlib
import inspect
import multiprocessing
from multiprocessing import connection
from multiprocessing import forkserver
from multiprocessing import resource_tracker
from multiprocessing import util
import os
import queue
import signal
import socket
import threading
import traceback
from typing import Any, Iterator

from freelm_jax.common import console
from freelm_jax.common import errors
from freelm_jax.config import gin_utils

_END = '__end__'
_ERROR = '__error__'


PipelineError = errors.PipelineError  # its home is `errors`


def _put(out, item) -> None:
  """Blocks until `out` takes `item`; exits if the parent process is gone."""
  while True:
    try:
      return out.put(item, timeout=1)
    except queue.Full:
      if not multiprocessing.parent_process().is_alive():  # not getppid(): the fork server's
        os._exit(1)


def _call(function: str, kwargs: dict) -> Any:
  """`function(**kwargs)`, `function` a dotted path."""
  module_name, name = function.rsplit('.', 1)
  return getattr(importlib.import_module(module_name), name)(**kwargs)


@dataclasses.dataclass(frozen=True)
class WorkerSetup:
  """What a worker does before its pipeline, as plain (picklable) data.

  Attributes:
    modules: the user's modules (`--module_import`), imported in this order;
      each registers its own tasks, once per process.
    registrations: (function, kwargs) calls the parent's gin config made to
      register tasks (`gin_utils.record_registration`), repeated after the
      modules in the order they were made.
  """

  modules: tuple[str, ...] = ()
  registrations: tuple[tuple[str, dict], ...] = ()

  def apply(self) -> None:
    """Imports the modules, then repeats the registrations (in a worker)."""
    for module in self.modules:
      importlib.import_module(module)
    for function, kwargs in self.registrations:
      _call(function, kwargs)


def worker_setup() -> WorkerSetup:
  """What an input worker needs to rebuild this process's tasks: the
  --module_import modules and the current gin config's registrations."""
  return WorkerSetup(modules=gin_utils.imported_modules(),
                     registrations=gin_utils.registrations())


def _worker(function: str, kwargs: dict, setup: WorkerSetup, out) -> None:
  """Child process: applies `setup`, iterates `function(**kwargs)` into `out`."""
  # A SIGTERM or Ctrl-C sent to the whole process group is the parent's to
  # handle (it saves a checkpoint first); the parent ends this process.
  signal.signal(signal.SIGTERM, signal.SIG_IGN)
  signal.signal(signal.SIGINT, signal.SIG_IGN)
  try:
    console.quiet_console()  # the parent's console: no library log lines
    console.import_tensorflow_quietly()
    setup.apply()
    for item in _call(function, kwargs):
      _put(out, item)
    _put(out, _END)
  except BaseException as e:  # pylint: disable=broad-except
    message = errors.user_message(e)
    user_error = message is not None
    if not user_error or errors.debug():  # a bug keeps its traceback (printed here).
      traceback.print_exc()
    _put(out, (_ERROR, message or f'{type(e).__name__}: {" ".join(str(e).split())}',
               user_error))
  out.close()
  out.join_thread()
  os._exit(0)  # skip TensorFlow's destructors (see the module docstring).


def start_server_by_fork() -> bool:
  """Starts this process's worker server as a fork of this process, which has
  imported TensorFlow, seqio and the built-in tasks already, instead of a new
  interpreter that imports them again (about 12 CPU-s a command).

  For a command's `main`, first thing: this process must have run no
  TensorFlow op, started no JAX backend and no thread, and imported no user
  module (workers import those themselves: `WorkerSetup`). Where
  multiprocessing's fork server is not the one this was written against
  (CPython 3.11 and 3.12), nothing happens, and the first worker starts the
  server as usual. Returns whether it started one.
  """
  # pylint: disable=protected-access
  server = forkserver._forkserver
  expected = ['listener_fd', 'alive_r', 'preload', 'main_path', 'sys_path']
  if (list(inspect.signature(forkserver.main).parameters) != expected
      or not all(hasattr(server, name) for name in (
          '_lock', '_forkserver_address', '_forkserver_alive_fd', '_forkserver_pid'))
      or hasattr(server, '_forkserver_authkey')  # a newer protocol
      or server._forkserver_pid is not None or threading.active_count() > 1):
    return False
  with server._lock:
    resource_tracker.ensure_running()
    with socket.socket(socket.AF_UNIX) as listener:
      address = connection.arbitrary_address('AF_UNIX')
      listener.bind(address)
      if not util.is_abstract_socket_namespace(address):
        os.chmod(address, 0o600)
      listener.listen()
      alive_r, alive_w = os.pipe()
      pid = os.fork()
      if pid == 0:  # the server: serves until every client has exited
        try:
          os.close(alive_w)
          forkserver.main(listener.fileno(), alive_r, [])
        finally:
          os._exit(0)
      os.close(alive_r)
    server._forkserver_address = address
    server._forkserver_alive_fd = alive_w
    server._forkserver_pid = pid
  return True


def _context():
  """multiprocessing's fork server, preloading `worker_preload` when it starts
  (with this process's first worker; it lives as long as this process)."""
  context = multiprocessing.get_context('forkserver')
  context.set_forkserver_preload(['freelm_jax.data.worker_preload'])
  return context


class ProcessIterator:
  """Iterates `function(**kwargs)` (a dotted path) in a worker process.

  Args:
    function: dotted path of a generator function, e.g.
      'freelm_jax.data.input_pipeline.lm_batches'.
    kwargs: its keyword arguments (picklable).
    setup: what the worker does first to register the parent's tasks
      (`worker_setup()`; default: nothing, the built-in tasks only).
    buffer_size: items the worker may produce ahead of the consumer.
  """

  def __init__(self, function: str, kwargs: dict, setup: WorkerSetup = WorkerSetup(),
               buffer_size: int = 8):
    context = _context()
    self._queue = context.Queue(maxsize=buffer_size)
    self._process = context.Process(
        target=_worker,
        args=(function, kwargs, setup, self._queue),
        daemon=True)
    self._process.start()
    self._done = False

  def __iter__(self) -> Iterator[Any]:
    return self

  def __next__(self) -> Any:
    if self._done:
      raise StopIteration
    while True:
      try:
        item = self._queue.get(timeout=5)
        break
      except queue.Empty:
        if not self._process.is_alive():
          self.close()
          raise PipelineError(
              f'input worker died (exit code {self._process.exitcode}).') from None
    if isinstance(item, str) and item == _END:
      self.close()
      raise StopIteration
    if isinstance(item, tuple) and len(item) == 3 and item[0] == _ERROR:
      self.close()
      _, message, user_error = item
      if user_error:
        raise PipelineError(message)
      raise RuntimeError(f'input worker failed (its traceback is above): {message}')
    return item

  def close(self) -> None:
    """Stops the worker (safe to call twice)."""
    self._done = True
    if self._process.is_alive():
      self._process.kill()  # SIGKILL: the worker ignores SIGTERM.
    self._process.join(timeout=10)

  def __enter__(self):
    return self

  def __exit__(self, *exc):
    self.close()
