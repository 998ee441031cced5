"""Orbax checkpoints of the train state plus a small JSON of run facts.

Each step directory holds two items: `state` (the sharded TrainState, written
by every process) and `run` (JSON: schedule position, batches consumed per
stream, task types). Saves are asynchronous and atomic (orbax writes to a
temporary directory and renames it on commit).
"""

import os
from typing import Any, Optional

import orbax.checkpoint as ocp


def create_manager(model_dir: str, save_every: int,
                   max_to_keep: Optional[int] = 3) -> ocp.CheckpointManager:
  """A CheckpointManager over `<model_dir>/checkpoints`."""
  options = ocp.CheckpointManagerOptions(
      save_interval_steps=max(save_every, 1), max_to_keep=max_to_keep,
      create=True, enable_async_checkpointing=True)
  return ocp.CheckpointManager(
      os.path.join(os.path.abspath(model_dir), 'checkpoints'),
      options=options, item_names=('state', 'run'))


def save(manager: ocp.CheckpointManager, step: int, state: Any,
         run_facts: dict, force: bool = False) -> bool:
  """Starts an async save of `state` and `run_facts` at `step`."""
  return manager.save(step, args=ocp.args.Composite(
      state=ocp.args.StandardSave(state), run=ocp.args.JsonSave(run_facts)),
                      force=force)


def restore(manager: ocp.CheckpointManager, abstract_state: Any,
            step: Optional[int] = None) -> tuple[Any, dict]:
  """Restores (state, run_facts) at `step` (default: newest) onto the
  shardings in `abstract_state`."""
  step = manager.latest_step() if step is None else step
  if step is None:
    raise FileNotFoundError(f'No checkpoint in {manager.directory}.')
  if step not in manager.all_steps():
    raise FileNotFoundError(
        f'No checkpoint at step {step} in {manager.directory}; '
        f'steps: {list(manager.all_steps())}.')
  restored = manager.restore(step, args=ocp.args.Composite(
      state=ocp.args.StandardRestore(abstract_state), run=ocp.args.JsonRestore()))
  return restored.state, dict(restored.run)
