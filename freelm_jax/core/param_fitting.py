"""Fitting a checkpoint's weights to a model whose shapes differ a little.

Used when a run starts from another checkpoint (`INIT_FROM`) and when
`freelm_jax.convert` imports one: GPT-2's vocabulary grows by FreeLM's
special tokens, a shorter context cuts the position embedding, and a head
with fewer tasks or labels fills what it has.
"""

from typing import Any, Mapping

from absl import logging
import numpy as np

from freelm_jax.common import errors
from freelm_jax.core import network
from freelm_jax.core import param_layout


def fit_params(source: param_layout.Params, target: param_layout.Params,
               config: network.ModelConfig) -> param_layout.Params:
  """`source` weights in the shapes and layout of `target` (a fresh init).

  The token embedding may grow (new rows: the mean of the old ones, e.g. for
  FreeLM's `[sep]`, `[cls]`, `[pad]` after GPT-2's 50257 tokens); position
  embeddings may be cut to a shorter context; heads and labels missing from
  the source keep the target's initialisation. Any other mismatch fails.
  """
  source = param_layout.scanned(param_layout.to_numpy(source), config.num_layers)
  target = param_layout.scanned(param_layout.to_numpy(target), config.num_layers)
  fitted = _fit_tree(source, target, '')
  return fitted if config.scan_layers else param_layout.unscanned(fitted, config.num_layers)


def _fit_tree(source: Any, target: Any, name: str) -> Any:
  """`source` fitted to `target` below the parameter path `name`."""
  if isinstance(target, Mapping):
    if not isinstance(source, Mapping) or set(source) != set(target):
      raise errors.CheckpointError(
          f'Parameter {name or "/"}: the checkpoint has '
          f'{sorted(source) if isinstance(source, Mapping) else "an array"},'
          f' the model {sorted(target)}.')
    return {k: _fit_tree(source[k], target[k], f'{name}/{k}') for k in target}
  if source.shape == target.shape:
    return source.astype(target.dtype)
  if name == '/wte/embedding' and source.shape[0] < target.shape[0]:
    extra = np.broadcast_to(source.mean(0), (target.shape[0] - source.shape[0],
                                              source.shape[1]))
    logging.info('Token embedding grown from %d to %d rows.', source.shape[0], target.shape[0])
    return np.concatenate([source, extra]).astype(target.dtype)
  if name == '/wpe/embedding' and source.shape[0] > target.shape[0]:
    logging.info('Position embedding cut from %d to %d.', source.shape[0], target.shape[0])
    return source[:target.shape[0]].astype(target.dtype)
  if name == '/head' and source.shape[1] == target.shape[1]:
    heads, labels = min(source.shape[0], target.shape[0]), min(source.shape[2], target.shape[2])
    out = np.array(target)
    out[:heads, :, :labels] = source[:heads, :, :labels]
    return out
  raise errors.CheckpointError(f'Parameter {name}: the checkpoint has shape '
                               f'{source.shape}, the model {target.shape}.')
