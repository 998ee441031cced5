"""The device mesh, the one table mapping logical axes onto it, and the
multi-host facts the loop needs (who joins the cluster, which rows each
process feeds).
"""

import contextlib
import glob
import math
import os
import threading
from typing import Optional, Sequence

import flax.linen as nn
import jax
from jax._src import cloud_tpu_init
from jax.experimental import mesh_utils
import numpy as np
from jax.sharding import AxisType, Mesh, NamedSharding, PartitionSpec

from freelm_jax.common import errors

MESH_AXES = ('data', 'fsdp', 'tensor')
BATCH_AXES = ('data', 'fsdp')

# Logical axis -> mesh axes. Parameters: embed is split by FSDP, heads / mlp /
# vocab by tensor parallelism. Activations: batch over data + fsdp.
LOGICAL_AXIS_RULES = (
    ('activation_batch', BATCH_AXES),
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
    raise errors.ConfigError(
        f'At most one of DATA/FSDP/TENSOR_PARALLELISM may be -1, got {dims}.')
  known = math.prod(d for d in dims if d != -1)
  if -1 in dims:
    if known <= 0 or num_devices % known:
      raise errors.ConfigError(
          f'Mesh data={dims[0]} x fsdp={dims[1]} x tensor={dims[2]}: {known} does '
          f'not divide the {num_devices} devices.')
    dims[dims.index(-1)] = num_devices // known
  if math.prod(dims) != num_devices:
    raise errors.ConfigError(
        f'Mesh data={dims[0]} x fsdp={dims[1]} x tensor={dims[2]} = '
        f'{math.prod(dims)} devices, but {num_devices} are available.')
  return tuple(dims)


def create_mesh(data: int = -1, fsdp: int = 1, tensor: int = 1,
                devices: Sequence[jax.Device] = None) -> Mesh:
  """A ('data', 'fsdp', 'tensor') mesh over all (or the given) devices.

  Axis types are Auto: the network relies on sharding constraints.
  """
  devices = jax.devices() if devices is None else list(devices)
  grid = device_grid(mesh_shape(data, fsdp, tensor, len(devices)), devices)
  return Mesh(grid, MESH_AXES, axis_types=(AxisType.Auto,) * len(MESH_AXES))


def device_grid(shape: tuple, devices: Sequence) -> np.ndarray:
  """Devices laid out by topology (`mesh_utils`) in a (data, fsdp, tensor) array.

  On a multi-slice TPU (devices with several `slice_index`es) the data axis
  spans the slices (DCN); fsdp and tensor stay inside a slice (ICI).
  """
  slices = len({getattr(d, 'slice_index', 0) for d in devices})
  if slices == 1:
    return mesh_utils.create_device_mesh(shape, devices, allow_split_physical_axes=True)
  if shape[0] % slices:
    raise errors.ConfigError(
        f'DATA_PARALLELISM={shape[0]} must be a multiple of the {slices} TPU '
        f'slices (data parallelism spans the slices).')
  return mesh_utils.create_hybrid_device_mesh(
      (shape[0] // slices, shape[1], shape[2]), (slices, 1, 1), devices,
      allow_split_physical_axes=True)


def logical_sharding(tree, mesh: Mesh):
  """NamedShardings for a tree of `nn.Partitioned` / LogicallyPartitioned specs."""
  specs = nn.get_partition_spec(tree)
  return nn.logical_to_mesh_sharding(specs, mesh, LOGICAL_AXIS_RULES)


def batch_sharding(mesh: Mesh) -> NamedSharding:
  """Sharding of input batches: leading axis over the data-parallel axes."""
  return NamedSharding(mesh, PartitionSpec(BATCH_AXES))


def replicated(mesh: Mesh) -> NamedSharding:
  return NamedSharding(mesh, PartitionSpec())


def batch_shards(mesh: Mesh) -> int:
  """How many ways a batch is split (data x fsdp)."""
  return math.prod(mesh.shape[a] for a in BATCH_AXES)


def check_batch_size(name: str, batch_size: int, mesh: Mesh) -> None:
  """A global batch must split evenly over the data-parallel axes."""
  shards = batch_shards(mesh)
  if batch_size <= 0 or batch_size % shards:
    raise errors.ConfigError(
        f'{name}={batch_size} does not divide over data x fsdp = '
        f'{mesh.shape["data"]} x {mesh.shape["fsdp"]} = {shards} batch shards.')


def process_data_shard(mesh: Mesh,
                       process_index: Optional[int] = None) -> tuple[int, int]:
  """(shard_index, num_shards): which slice of each global batch this process feeds.

  A process feeds the rows its devices hold. Processes whose devices hold the
  same rows (tensor parallelism across hosts) read the same input shard.
  """
  process_index = jax.process_index() if process_index is None else process_index
  rows_per_process = {}
  for row, devices in enumerate(mesh.devices.reshape(batch_shards(mesh), -1)):
    for device in devices:
      rows_per_process.setdefault(device.process_index, set()).add(row)
  groups = sorted({tuple(sorted(rows)) for rows in rows_per_process.values()})
  sizes = {len(g) for g in groups}
  contiguous = all(g == tuple(range(g[0], g[0] + len(g))) for g in groups)
  if len(sizes) > 1 or not contiguous or sum(map(len, groups)) != batch_shards(mesh):
    raise errors.ConfigError(
        f'Mesh {dict(mesh.shape)}: the processes hold batch rows {groups}; each '
        f'must hold an equal, contiguous, non-overlapping block.')
  return groups.index(tuple(sorted(rows_per_process[process_index]))), len(groups)


def initialize_distributed(coordinator_address: Optional[str] = None,
                           num_processes: Optional[int] = None,
                           process_id: Optional[int] = None,
                           timeout_s: int = 300) -> None:
  """Joins the JAX cluster before any device is used.

  With `coordinator_address`, `num_processes` and `process_id` (GPU clusters,
  tests): joins that cluster. Without them, on a Cloud TPU VM: JAX finds the
  workers itself. Otherwise: one process. A process that cannot join within
  `timeout_s` prints one `error:` line and exits with status 1 (JAX would
  abort the process with a C++ stack trace).
  """
  given = (coordinator_address, num_processes, process_id)
  if all(v is None for v in given):
    if _on_cloud_tpu_vm():
      with _deadline(timeout_s, 'this TPU VM could not join the other workers of '
                     f'its slice within --distributed_timeout={timeout_s}s'):
        jax.distributed.initialize(initialization_timeout=timeout_s + 60)
    return
  if None in given:
    raise errors.ConfigError(
        '--coordinator_address, --num_processes and --process_id go together; got '
        f'{coordinator_address!r}, {num_processes!r}, {process_id!r}.')
  if not 0 <= process_id < num_processes:
    raise errors.ConfigError(
        f'--process_id={process_id} is not in [0, --num_processes={num_processes}).')
  message = (f'process {process_id} of {num_processes} could not join the coordinator '
             f'at {coordinator_address} within --distributed_timeout={timeout_s}s '
             f'(is process 0 running there, and are all {num_processes} processes started?)')
  with _deadline(timeout_s, message):
    jax.distributed.initialize(coordinator_address, num_processes, process_id,
                               initialization_timeout=timeout_s + 60)


# PCI vendor (and class prefix) of the accelerators JAX can use -> the install
# that makes JAX use them.
_ACCELERATORS = (
    ('0x10de', '0x03', 'an NVIDIA GPU', 'cuda12'),  # NVIDIA, display/3D controller
    ('0x1ae0', '', 'a Cloud TPU', 'tpu'),  # Google
)


def unused_accelerator_hint(backend: str, sysfs: str = '/sys/bus/pci/devices') -> Optional[str]:
  """One line naming the install that fixes it, when JAX runs on the CPU
  (`backend`) of a machine whose PCI bus shows a GPU or TPU; else None."""
  if backend != 'cpu':
    return None
  for device in sorted(glob.glob(os.path.join(sysfs, '*'))):
    vendor, device_class = (_read(os.path.join(device, f)) for f in ('vendor', 'class'))
    for want_vendor, class_prefix, what, extra in _ACCELERATORS:
      if vendor == want_vendor and device_class.startswith(class_prefix):
        return (f'This machine has {what}, but JAX runs on the CPU: install JAX for '
                f'it with pip install "freelm_jax[{extra}]" (in a checkout: '
                f'make setup ACCELERATOR={extra}).')
  return None


def _read(path: str) -> str:
  try:
    with open(path) as f:
      return f.read().strip()
  except OSError:
    return ''


def _on_cloud_tpu_vm() -> bool:
  """JAX's own detection, done when jax is imported."""
  return bool(getattr(cloud_tpu_init, 'running_in_cloud_tpu_vm', False))


@contextlib.contextmanager
def _deadline(seconds: float, message: str):
  """Exits the process with `error: message` unless the block ends in time."""
  timer = threading.Timer(seconds, errors.exit_now, args=(message,))
  timer.daemon = True
  timer.start()
  try:
    yield
  finally:
    timer.cancel()
