"""The device mesh and the one table mapping logical axes onto it."""

import math
from typing import Sequence

import flax.linen as nn
import jax
import numpy as np
from jax.sharding import Mesh, NamedSharding, PartitionSpec

MESH_AXES = ('data', 'fsdp', 'tensor')

# Logical axis -> mesh axes. Parameters: embed is split by FSDP, heads / mlp /
# vocab by tensor parallelism. Activations: batch over data + fsdp.
LOGICAL_AXIS_RULES = (
    ('activation_batch', ('data', 'fsdp')),
    ('activation_length', None),
    ('activation_embed', None),
    ('activation_heads', 'tensor'),
    ('activation_kv', None),
    ('activation_mlp', 'tensor'),
    ('activation_vocab', 'tensor'),
    ('vocab', 'tensor'),
    ('embed', 'fsdp'),
    ('heads', 'tensor'),
    ('kv', None),
    ('mlp', 'tensor'),
    ('length', None),
    ('layers', None),
    ('norm', None),
    ('heads_mt', None),
    ('labels', None),
)


def mesh_shape(data: int, fsdp: int, tensor: int, num_devices: int) -> tuple:
  """Resolves one -1 entry to the remaining devices; checks the product."""
  dims = [data, fsdp, tensor]
  if dims.count(-1) > 1:
    raise ValueError(f'At most one of DATA/FSDP/TENSOR_PARALLELISM may be -1, got {dims}.')
  known = math.prod(d for d in dims if d != -1)
  if -1 in dims:
    if known <= 0 or num_devices % known:
      raise ValueError(f'Mesh {dims} does not divide {num_devices} devices.')
    dims[dims.index(-1)] = num_devices // known
  if math.prod(dims) != num_devices:
    raise ValueError(
        f'Mesh data={dims[0]} x fsdp={dims[1]} x tensor={dims[2]} = '
        f'{math.prod(dims)} devices, but {num_devices} are available.')
  return tuple(dims)


def create_mesh(data: int = -1, fsdp: int = 1, tensor: int = 1,
                devices: Sequence[jax.Device] = None) -> Mesh:
  """A ('data', 'fsdp', 'tensor') mesh over all (or the given) devices."""
  devices = jax.devices() if devices is None else list(devices)
  shape = mesh_shape(data, fsdp, tensor, len(devices))
  return Mesh(np.asarray(devices).reshape(shape), MESH_AXES)


def logical_sharding(tree, mesh: Mesh):
  """NamedShardings for a tree of `nn.Partitioned` / LogicallyPartitioned specs."""
  specs = nn.get_partition_spec(tree)
  return nn.logical_to_mesh_sharding(specs, mesh, LOGICAL_AXIS_RULES)


def batch_sharding(mesh: Mesh) -> NamedSharding:
  """Sharding of input batches: leading axis over the data-parallel axes."""
  return NamedSharding(mesh, PartitionSpec(('data', 'fsdp')))


def replicated(mesh: Mesh) -> NamedSharding:
  return NamedSharding(mesh, PartitionSpec())
