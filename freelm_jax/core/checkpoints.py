"""Orbax checkpoints of the train state plus a small JSON of run facts.

Each step directory holds two items: `state` (the sharded TrainState, written
by every process) and `run` (JSON: schedule position, batches consumed per
stream, task types). Saves are asynchronous and atomic (orbax writes to a
temporary directory and renames it on commit), and a save that failed in the
background raises CheckpointError naming its step (at the next `save` or at
`finish`), also where orbax's finalize thread only logs it.

`restore_newest` never starts from scratch over existing checkpoints: a newest
checkpoint that fails to load is reported in one line and the previous one is
used (the bad one is moved to `<model_dir>/corrupt_checkpoints/`); a
checkpoint whose shapes differ from the config stops the run naming them.

`load_params` reads one step's parameters alone, as numpy arrays (for
inference and conversion; no train state, no mesh).
"""

import contextlib
import os
import signal
import threading
import time
import weakref
from typing import Any, Optional

from absl import logging
import jax
from jax.experimental import multihost_utils
import numpy as np
import orbax.checkpoint as ocp

from freelm_jax.common import errors
from freelm_jax.common import storage
from freelm_jax.core import param_layout

CheckpointError = errors.CheckpointError


# The step each manager saves asynchronously, checked once the save is done.
_PENDING: 'weakref.WeakKeyDictionary[ocp.CheckpointManager, int]' = weakref.WeakKeyDictionary()


def check_writable(model_dir: str) -> None:
  """Creates `model_dir` (local or remote) and probes a write; CheckpointError naming it if not."""
  directory = storage.resolve(model_dir)
  probe = directory / f'.write_probe.{os.getpid()}'
  try:
    directory.mkdir(parents=True, exist_ok=True)
    probe.write_text('ok')
    probe.unlink()
  except Exception as e:  # pylint: disable=broad-except
    # OSError locally; remote backends raise their own errors (e.g. TF's).
    reason = getattr(e, 'strerror', None) or ' '.join(str(e).split())[:200] or type(e).__name__
    raise CheckpointError(f'MODEL_DIR={model_dir!r} is not writable ({reason}).') from None


def _save_each_array_from_one_replica_on_cpu() -> None:
  """On CPU, orbax saves each array from one replica, as it does on GPU.

  Its default there, replica-parallel saving, slices every replicated array
  across its replicas with one compiled slice per array shape: seconds of
  compilation in each process that saves, which CPU devices gain nothing from.
  The files written are the same.
  """
  if jax.default_backend() != 'cpu':
    return
  handler = ocp.type_handlers.get_type_handler(jax.Array)
  if getattr(handler, '_use_replica_parallel', False):
    ocp.type_handlers.register_type_handler(jax.Array, ocp.type_handlers.ArrayHandler(
        use_replica_parallel=False,
        # pylint: disable-next=protected-access
        array_metadata_store=getattr(handler, '_array_metadata_store', None)), override=True)


def create_manager(model_dir: str, save_every: int,
                   max_to_keep: Optional[int] = 3) -> ocp.CheckpointManager:
  """A CheckpointManager over `<model_dir>/checkpoints`."""
  _save_each_array_from_one_replica_on_cpu()
  options = ocp.CheckpointManagerOptions(
      save_interval_steps=max(save_every, 1), max_to_keep=max_to_keep,
      create=True, enable_async_checkpointing=True)
  return ocp.CheckpointManager(
      storage.resolve(model_dir) / 'checkpoints',
      options=options,
      item_handlers={'state': ocp.StandardCheckpointHandler(),
                     'run': ocp.JsonCheckpointHandler()})


def save(manager: ocp.CheckpointManager, step: int, state: Any,
         run_facts: dict, force: bool = False) -> bool:
  """Starts an async save of `state` and `run_facts` at `step`.

  Raises CheckpointError if the previous async save failed. A step already
  saved (or being saved) is not saved again, even with `force`.
  """
  previous = _PENDING.get(manager)
  if step == previous or step in manager.all_steps():
    return False
  try:  # orbax first waits for the previous save, raising its failure.
    started = manager.save(step, args=ocp.args.Composite(
        state=ocp.args.StandardSave(state), run=ocp.args.JsonSave(run_facts)),
                           force=force)
  except Exception as e:  # pylint: disable=broad-except
    raise _save_failed(manager, step if previous is None else previous, e) from e
  if started and previous is not None:  # orbax waited for it before starting.
    _check_committed(manager, previous)
  if started:
    _PENDING[manager] = step
  return started


def finish(manager: ocp.CheckpointManager) -> None:
  """Waits for async saves; raises CheckpointError if the last one failed."""
  step = _PENDING.get(manager)
  try:
    manager.wait_until_finished()
  except Exception as e:  # pylint: disable=broad-except
    raise _save_failed(manager, step, e) from e
  if step is not None:
    _check_committed(manager, step)
    _PENDING.pop(manager, None)


def _check_committed(manager: ocp.CheckpointManager, step: int) -> None:
  """Raises CheckpointError unless `step` is committed in storage.

  Checks that step's directory only: `manager.reload()` reads every step's
  metadata and can race with the primary process deleting old steps.
  """
  if not ocp.step.is_path_finalized(manager.directory / str(step)):
    with contextlib.suppress(Exception):
      manager.reload()  # forgets the failed step; the error below is the one to report.
    raise CheckpointError(
        f'saving the checkpoint at step {step} in {manager.directory} failed '
        f'(orbax logged the reason above).')


def _save_failed(manager: ocp.CheckpointManager, step: Optional[int],
                 error: Exception) -> CheckpointError:
  _PENDING.pop(manager, None)
  return CheckpointError(
      f'saving the checkpoint at step {step} in {manager.directory} failed: '
      f'{type(error).__name__}: {" ".join(str(error).split())[:300]}')


def restore(manager: ocp.CheckpointManager, abstract_state: Any,
            step: Optional[int] = None) -> tuple[Any, dict]:
  """Restores (state, run_facts) at `step` (default: newest) onto the
  shardings in `abstract_state`."""
  step = manager.latest_step() if step is None else step
  if step is None:
    raise CheckpointError(f'No checkpoint in {manager.directory}.')
  if step not in manager.all_steps():
    raise CheckpointError(
        f'No checkpoint at step {step} in {manager.directory}; '
        f'steps: {list(manager.all_steps())}.')
  check_shapes(manager, step, abstract_state)
  restored = manager.restore(step, args=ocp.args.Composite(
      state=ocp.args.StandardRestore(abstract_state), run=ocp.args.JsonRestore()))
  return restored.state, dict(restored.run)


def check_shapes(manager: ocp.CheckpointManager, step: int, abstract_state: Any) -> None:
  """Raises CheckpointError naming every array whose saved shape differs."""
  try:
    saved = manager.item_metadata(step)['state']
  except Exception:  # pylint: disable=broad-except
    return  # unreadable metadata: restore() reports the checkpoint itself.
  if saved is None:
    return
  saved_shapes = _shapes(saved)
  wanted = _shapes(abstract_state)
  params_first = sorted(wanted, key=lambda k: not k.startswith('params'))
  differ = [f'{k}: {saved_shapes.get(k, "missing")} in the checkpoint, '
            f'{wanted[k]} in the config' for k in params_first
            if saved_shapes.get(k) != wanted[k]]
  differ += [f'{k}: {v} in the checkpoint, missing in the config'
             for k, v in saved_shapes.items() if k not in wanted]
  if differ:
    shown = '; '.join(differ[:4]) + (f'; and {len(differ) - 4} more' if len(differ) > 4 else '')
    raise CheckpointError(
        f'checkpoint {os.path.join(str(manager.directory), str(step))} does not match '
        f'the config: {shown}. Use the model config it was trained with, or a new '
        f'model_dir.')


def _shapes(tree: Any) -> dict[str, tuple]:
  """'params/decoder/...' -> shape for every array leaf of a (metadata) tree."""
  flat = jax.tree_util.tree_flatten_with_path(
      tree, is_leaf=lambda x: hasattr(x, 'shape'))[0]
  out = {}
  for path, leaf in flat:
    if hasattr(leaf, 'shape'):
      key = '/'.join(str(getattr(p, 'key', getattr(p, 'name', getattr(p, 'idx', p))))
                     for p in path)
      out[key] = tuple(int(d) for d in leaf.shape)
  return out


def restore_newest(manager: ocp.CheckpointManager, abstract_state: Any,
                   model_dir: str) -> Optional[tuple[Any, dict]]:
  """(state, run_facts) of the newest checkpoint that restores; None if none exist.

  A checkpoint that fails to restore is reported in one line; once an older
  one restores, the failed ones are moved to `<model_dir>/corrupt_checkpoints/`
  (the run will write those steps again). If every checkpoint fails, raises
  CheckpointError and moves nothing (never a silent fresh start). A
  config/checkpoint shape mismatch raises at once.
  """
  failed = []
  for step in sorted(manager.all_steps(), reverse=True):
    try:
      restored = restore(manager, abstract_state, step)
    except CheckpointError:
      raise
    except Exception as e:  # pylint: disable=broad-except
      path = os.path.join(str(manager.directory), str(step))
      logging.warning('Checkpoint %s failed to restore (%s: %s); trying the previous one.',
                      path, type(e).__name__, ' '.join(str(e).split())[:300])
      failed.append(step)
      continue
    for bad in failed:
      _move_aside(manager, bad, model_dir)
    return restored
  if failed:
    raise CheckpointError(
        'no checkpoint restores: ' + ', '.join(
            os.path.join(str(manager.directory), str(step)) for step in failed) +
        ' failed (reasons logged above); move them away or use a new model_dir to '
        'start from scratch.')
  return None


def _move_aside(manager: ocp.CheckpointManager, step: int, model_dir: str) -> None:
  """Moves a bad step directory out of orbax's way (process 0), then reloads."""
  if jax.process_index() == 0:
    corrupt = storage.resolve(model_dir) / 'corrupt_checkpoints'
    corrupt.mkdir(parents=True, exist_ok=True)
    (manager.directory / str(step)).rename(corrupt / f'{step}.{int(time.time())}')
  if jax.process_count() > 1:
    multihost_utils.sync_global_devices(f'corrupt_checkpoint_{step}')
  manager.reload()


class Checkpointer:
  """A manager's saves as the training loop makes them (`loop.Checkpointer`)."""

  def __init__(self, manager: ocp.CheckpointManager):
    self.manager = manager

  def due(self, step: int) -> bool:
    """Whether the manager's cadence (every `save_every` steps) saves `step`."""
    return self.manager.should_save(step)

  def save(self, step: int, state: Any, facts: dict, force: bool = False) -> None:
    save(self.manager, step, state, facts, force)

  def finish(self) -> None:
    finish(self.manager)


class Preemption:
  """Whether to stop at a step because the run was asked to (SIGTERM).

  One process: a SIGTERM handler sets `requested` (a second SIGTERM is logged
  and ignored, so it cannot interrupt the save), which evaluations check
  between batches too. Several processes: JAX's preemption service receives
  SIGTERM and orbax's `reached_preemption` says at which step every process
  stops, so all save the same step (an evaluation runs to its end).
  Use as a context manager around the training loop and its final evaluation.
  """

  def __init__(self, manager: ocp.CheckpointManager):
    self.manager = manager
    self.requested = False
    self._previous = None

  def __enter__(self) -> 'Preemption':
    if jax.process_count() == 1 and threading.current_thread() is threading.main_thread():
      self._previous = signal.signal(signal.SIGTERM, self._on_signal)
    return self

  def __exit__(self, *exc) -> None:
    if self._previous is not None:
      signal.signal(signal.SIGTERM, self._previous)
      self._previous = None

  def _on_signal(self, signum, frame) -> None:
    del signum, frame
    if self.requested:
      logging.warning('SIGTERM again: still saving the checkpoint; ignored.')
    else:
      logging.warning('SIGTERM: stopping after this step or evaluation batch, with the '
                      'step saved.')
    self.requested = True

  def reached(self, step: int) -> bool:
    """True if the run should save at `step` and stop."""
    return self.requested or self.manager.reached_preemption(step)


# --- Parameters alone, for inference and conversion --------------------------


def checkpoint_steps(model_dir: str) -> list[int]:
  """Committed checkpoint steps in a model_dir, ascending."""
  root = storage.resolve(model_dir) / 'checkpoints'
  if not root.is_dir():
    return []
  return sorted(int(d.name) for d in root.iterdir()
                if d.name.isdigit() and (d / 'state').is_dir())


def load_params(model_dir: str, num_layers: int,
                step: Optional[int] = None) -> param_layout.Params:
  """The parameters of step `step` (or the newest) alone, as numpy arrays on
  the host, with `num_layers` layers scanned, whatever mesh the run that
  wrote them used: the weights' moving average where the run kept one
  (`EMA_DECAY`), as its evaluation read them."""
  steps = checkpoint_steps(model_dir)
  if not steps:
    raise errors.CheckpointError(f'{model_dir}: no checkpoint in checkpoints/.')
  step = steps[-1] if step is None else step
  if step not in steps:
    raise errors.CheckpointError(
        f'{model_dir}: no checkpoint at step {step}; steps: {steps}.')
  path = storage.resolve(model_dir) / 'checkpoints' / str(step) / 'state'
  tree = ocp.PyTreeCheckpointHandler().metadata(path).tree
  key = 'ema_params' if tree.get('ema_params') else 'params'  # the average, where kept
  item = {key: jax.tree.map(lambda m: jax.ShapeDtypeStruct(m.shape, m.dtype), tree[key])}
  restore_args = jax.tree.map(lambda _: ocp.RestoreArgs(restore_type=np.ndarray), item)
  restored = ocp.PyTreeCheckpointer().restore(path, args=ocp.args.PyTreeRestore(
      item=item, restore_args=restore_args, partial_restore=True))
  return param_layout.scanned(param_layout.to_numpy(restored[key]), num_layers)
