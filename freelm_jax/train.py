r"""Trains FreeLM.

  python -m freelm_jax.train --gin_file=gin/base.gin \
      [--gin_file=...] [--gin.NAME=VALUE ...] [--model_dir=DIR] [--module_import=M]

Multi-host: run the same command on every host. Cloud TPU VMs join by
themselves; elsewhere add --coordinator_address=HOST:PORT --num_processes=N
--process_id=I [--distributed_timeout=SECONDS].
"""

from absl import flags

from freelm_jax import cli
from freelm_jax.common import console
from freelm_jax.config import gin_utils
from freelm_jax.data import prefetch
from freelm_jax.training import evaluation
from freelm_jax.training import runner

cli.define_flags()
flags.adopt_module_key_flags(cli)  # --help lists them with the tool's own
flags.DEFINE_string('model_dir', None, 'Overrides the MODEL_DIR macro.')
FLAGS = flags.FLAGS


def main(argv):
  del argv
  # Before JAX starts, any thread runs or a user module is imported.
  prefetch.start_server_by_fork()
  console.quiet_console()
  bindings = list(FLAGS.gin_bindings)
  if FLAGS.model_dir:
    bindings.append(f'MODEL_DIR = {FLAGS.model_dir!r}')

  def run():
    cli.initialize_distributed()
    gin_utils.import_modules(FLAGS.module_import)
    gin_utils.parse(FLAGS.gin_file, bindings)
    return runner.train()

  rows = cli.run_or_exit(run)
  if rows:
    print(evaluation.format_table(rows))


def run():
  """The `freelm-train` command."""
  cli.run_cli(main)


if __name__ == '__main__':
  run()
