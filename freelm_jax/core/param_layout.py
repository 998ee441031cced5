"""Parameter trees as nested dicts of numpy arrays, and their two layer layouts.

The network's decoder keeps its blocks either scanned (`decoder/layers/...`,
every leaf with a leading layer axis) or unrolled (`decoder/layers_<i>/...`),
as `ModelConfig.scan_layers` says. Checkpoint import and export work in the
scanned layout; these functions convert between the two.
"""

from typing import Any, Mapping

import numpy as np

Params = dict[str, Any]


def to_numpy(tree: Any) -> Any:
  """Nested dicts of host float arrays (from jax or numpy leaves)."""
  if isinstance(tree, Mapping):
    return {k: to_numpy(v) for k, v in tree.items()}
  return np.asarray(tree)


def stack(layers: list) -> Params:
  """One tree whose leaves stack the leaves of `layers` on a new first axis."""
  if isinstance(layers[0], Mapping):
    return {k: stack([layer[k] for layer in layers]) for k in layers[0]}
  return np.stack(layers)


def index(tree: Any, i: int) -> Any:
  """Entry `i` of every leaf's first axis (one layer of a stacked tree)."""
  if isinstance(tree, Mapping):
    return {k: index(v, i) for k, v in tree.items()}
  return tree[i]


def scanned(params: Params, num_layers: int) -> Params:
  """Parameters in the scanned layout (`decoder/layers` with a layer axis)."""
  decoder = params['decoder']
  if 'layers' in decoder:
    return params
  layers = [decoder[f'layers_{i}'] for i in range(num_layers)]
  return dict(params, decoder={'ln_f': decoder['ln_f'], 'layers': stack(layers)})


def unscanned(params: Params, num_layers: int) -> Params:
  """Parameters in the unrolled layout (`decoder/layers_<i>`)."""
  decoder = params['decoder']
  if 'layers' not in decoder:
    return params
  layers = {f'layers_{i}': index(decoder['layers'], i) for i in range(num_layers)}
  return dict(params, decoder={'ln_f': decoder['ln_f'], **layers})
