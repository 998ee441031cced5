r"""Trains FreeLM.

  python -m freelm_jax.train --gin_file=gin/base.gin \
      [--gin_file=...] [--gin.NAME=VALUE ...] [--model_dir=DIR] [--module_import=M]

Multi-host: run the same command on every host. Cloud TPU VMs join by
themselves; elsewhere add --coordinator_address=HOST:PORT --num_processes=N
--process_id=I [--distributed_timeout=SECONDS].
"""

from absl import flags

from freelm_jax import console
from freelm_jax import gin_utils

console.quiet_environment()  # before TensorFlow and JAX load

gin_utils.define_flags()
flags.adopt_module_key_flags(gin_utils)  # --help lists them with the tool's own
flags.DEFINE_string('model_dir', None, 'Overrides the MODEL_DIR macro.')
FLAGS = flags.FLAGS


def main(argv):
  del argv
  console.quiet_console()
  console.import_tensorflow_quietly()
  # lazy: JAX and TensorFlow load after the two lines above have quieted them
  # pylint: disable=g-import-not-at-top
  from freelm_jax import evaluation
  from freelm_jax import train_lib
  bindings = list(FLAGS.gin_bindings)
  if FLAGS.model_dir:
    bindings.append(f'MODEL_DIR = {FLAGS.model_dir!r}')

  def run():
    gin_utils.initialize_distributed()
    gin_utils.import_modules(FLAGS.module_import)
    gin_utils.parse(FLAGS.gin_file, bindings)
    return train_lib.train()

  rows = gin_utils.run_or_exit(run)
  if rows:
    print(evaluation.format_table(rows))


def run():
  """The `freelm-train` command."""
  gin_utils.run_cli(main)


if __name__ == '__main__':
  run()
