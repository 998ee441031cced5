r"""Memory and FLOPs planning: compiles the train step of each objective of the
schedule (OBJECTIVE_SCHEDULE) ahead of time for a config and mesh on virtual
CPU devices, and prints JSON.

  python -m freelm_jax.plan --gin_file=gin/base.gin --gin_file=gin/models/gpt2_1.5b.gin \
      --num_devices=8 [--gin.FSDP_PARALLELISM=8 ...] [--device_memory_gib=16]

Nothing is allocated or run: the state and batches are abstract shapes with
their shardings (`jax.jit(...).lower(...).compile()`). Per-device memory comes
from the compiled executable's memory analysis; it is the CPU compiler's
buffer assignment, an estimate of what a TPU or GPU compiler assigns.
Imports neither TensorFlow nor seqio: gin's `import tasks` is skipped and no
data pipeline is built.
"""

import json
import os
import sys

from absl import app
from absl import flags
import numpy as np

import jax

from freelm_jax import cli
from freelm_jax.config import settings
from freelm_jax.core import accounting
from freelm_jax.training import runner

cli.define_flags()
flags.adopt_module_key_flags(cli)  # --help lists them with the tool's own
flags.DEFINE_integer('num_devices', 8, 'Virtual devices to plan for.', lower_bound=1)
flags.DEFINE_float('device_memory_gib', 16.0, 'Memory of one device, for `fits`.',
                   lower_bound=0)
FLAGS = flags.FLAGS

GIB = 2**30
SCANNED_FLOPS_NOTE = (
    'XLA cost analysis counts a loop body once: with scan_layers the compiled '
    'FLOPs include one layer of the stack; plan with '
    '--gin.network.ModelConfig.scan_layers=False to count every layer.')


def memory(compiled) -> dict:
  """Per-device bytes of a compiled step (`accounting.memory_bytes`) and peak GiB."""
  out = accounting.memory_bytes(compiled)
  return {f'{k}_bytes': v for k, v in out.items()} | {'peak_gib': round(out['peak'] / GIB, 3)}


def compiled_flops(compiled):
  """FLOPs of one device's program, or None where the backend gives none."""
  try:
    cost = compiled.cost_analysis()
  except Exception:  # pylint: disable=broad-except
    return None
  cost = cost[0] if isinstance(cost, (list, tuple)) else cost
  return float(cost['flops']) if cost and 'flops' in cost else None


def plan() -> dict:
  """Builds the trainer from the parsed gin config and compiles the schedule's steps."""
  model_config, data, trainer, schedule = runner.trainer_without_data(
      FLAGS.gin_file, FLAGS.gin_bindings)
  state = trainer.abstract_state()
  count = lambda tree: int(sum(np.prod(x.shape) for x in jax.tree.leaves(tree)))
  batches = settings.abstract_batches(data, trainer.batch_sharding)
  seq_lens = {'lm': data.lm_seq_len,
              'teacher': data.teacher_pack_len or data.teacher_seq_len}
  steps = {}
  for objective in schedule.objectives:
    stream = trainer.objectives[objective].stream
    steps[objective] = plan_step(trainer, state, objective, batches[stream],
                                 seq_lens[stream], model_config, count(state.params['decoder']))
  return {
      'gin_files': FLAGS.gin_file, 'gin_bindings': FLAGS.gin_bindings,
      'model': accounting.model_summary(model_config),
      'num_devices': jax.device_count(), 'mesh': dict(trainer.mesh.shape),
      'parameters': count(state.params),
      'train_state_gib_all_devices': round(sum(
          x.size * x.dtype.itemsize for x in jax.tree.leaves(state)) / GIB, 3),
      'device_memory_gib': FLAGS.device_memory_gib,
      'fits': all(s['fits_device_memory'] for s in steps.values()),
      'steps': steps,
      **({'flops_note': SCANNED_FLOPS_NOTE} if model_config.scan_layers else {}),
  }


def plan_step(trainer, state, objective: str, batch: dict, seq_len: int, model_config,
              decoder_params: int) -> dict:
  """Memory and FLOPs of `objective`'s step compiled for an abstract batch."""
  compiled = trainer.compile_step(objective, state, batch)
  tokens = batch['tokens'].shape[0] * seq_len
  flops = compiled_flops(compiled)
  mem = memory(compiled)
  return {
      'batch_size': batch['tokens'].shape[0], 'seq_len': seq_len,
      'memory_per_device': mem,
      'fits_device_memory': mem['peak_gib'] <= FLAGS.device_memory_gib,
      'flops_per_token_formula': accounting.flops_per_token(
          model_config, decoder_params, objective, seq_len),
      'flops_per_token_compiled': (None if flops is None else
                                   flops * jax.device_count() / tokens),
  }


def main(argv):
  del argv
  # Before JAX starts its backend: virtual CPU devices. LLVM optimisation level
  # 0 compiles faster and changes neither buffer assignment nor HLO FLOPs.
  jax.config.update('jax_platforms', 'cpu')
  os.environ['XLA_FLAGS'] = ' '.join([
      os.environ.get('XLA_FLAGS', ''), '--xla_backend_optimization_level=0',
      f'--xla_force_host_platform_device_count={FLAGS.num_devices}'])
  result = cli.run_or_exit(plan)
  print(json.dumps(result, indent=2))


def run():
  """The `freelm-plan` command."""
  app.run(main, argv=cli.rewrite_gin_args(sys.argv))


if __name__ == '__main__':
  run()
