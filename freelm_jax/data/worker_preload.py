"""Imported once by the input workers' fork server, before any worker starts.

`prefetch.ProcessIterator` forks each input worker from a server process that
has imported this module: TensorFlow (without its C++ start-up lines), seqio,
the built-in tasks and the input pipelines. A worker then starts in a fraction
of a second instead of importing them again (about 8 s of CPU each, two or
three workers a run). The server itself never runs a TensorFlow op, so forking
it is safe; the user's modules are still imported in each worker
(`prefetch.WorkerSetup`), never in the server. The server ends (with its run)
without tearing TensorFlow down, which would take seconds of CPU; it has
nothing to flush.
"""

import atexit
import os

from freelm_jax.common import console

console.quiet_console()
console.import_tensorflow_quietly()
atexit.register(os._exit, 0)  # pylint: disable=protected-access

# pylint: disable=g-import-not-at-top,unused-import,wrong-import-position
from freelm_jax.data import input_pipeline  # imports seqio, TensorFlow and `tasks`
