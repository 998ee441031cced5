r"""Builds GLUE_DIR: GLUE's splits as JSONL and the paper's 1k samples
(`tasks/build_glue.py` says what it writes, from which source).

  python -m freelm_jax.build_glue [--glue_dir=~/.cache/freelm_jax/glue]
      [--tfds_data_dir=DIR | --glue_files=DIR] [--tasks=sst2,cola,...] [--overwrite]
"""

from absl import app
from absl import flags

from freelm_jax import cli
from freelm_jax.common import console
from tasks import build_glue
from tasks import glue


def define_flags() -> None:
  """The CLI's flags; defined by `run` only, so importing this module defines none."""
  flags.DEFINE_string('glue_dir', glue.DEFAULT_GLUE_DIR, 'Where the JSONL files go (GLUE_DIR).')
  flags.DEFINE_string('tfds_data_dir', None,
                      'TFDS data_dir with glue/* prepared (default: $TFDS_DATA_DIR or '
                      '~/tensorflow_datasets).')
  flags.DEFINE_string('glue_files', None,
                      "Read GLUE's own files instead of TFDS: the directory its download "
                      'script writes (SST-2/, CoLA/, MNLI/, ...).')
  flags.DEFINE_list('tasks', list(build_glue.TASKS), 'GLUE tasks to build.')
  flags.DEFINE_boolean('overwrite', False, 'Rebuild files that exist.')


def main(argv) -> None:
  if len(argv) > 1:
    raise app.UsageError(f'unexpected arguments: {" ".join(argv[1:])}')
  f = flags.FLAGS
  source = (build_glue.GlueFilesSource(f.glue_files) if f.glue_files
            else build_glue.TfdsSource(f.tfds_data_dir))
  cli.run_or_exit(lambda: build_glue.build(f.glue_dir, source, f.tasks, f.overwrite))


def run() -> None:
  """The `freelm-build-glue` command (`python -m freelm_jax.build_glue`)."""
  console.quiet_console()
  define_flags()
  cli.run_cli(main)


if __name__ == '__main__':
  run()
