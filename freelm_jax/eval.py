r"""Zero-shot evaluation of a trained FreeLM on teacher tasks.

  python -m freelm_jax.eval --model_dir=DIR [--gin_file=...] [--checkpoint_step=N]
      [--tasks=a,b] [--split=SPLIT] [--module_import=MODULE]

Scores every candidate proposition of every example and predicts the label
whose proposition is most probably true; also the language task's held-out
loss and perplexity (`LM_EVAL_BATCHES` batches). Prints the tables and appends
eval rows to the model_dir's metrics.jsonl (log lines: model_dir/eval.log). The model_dir's operative config.gin is
read first; --gin_file files are layered on top (e.g. gin/eval/glue_paper.gin).
"""

import dataclasses
import os

from absl import flags

from freelm_jax import cli
from freelm_jax.common import console
from freelm_jax.common import storage
from freelm_jax.config import gin_utils
from freelm_jax.config import settings
from freelm_jax.core import checkpoints
from freelm_jax.core import partitioning
from freelm_jax.data import prefetch
from freelm_jax.training import evaluation
from freelm_jax.training import metrics as metrics_lib
from freelm_jax.training import run_tasks
from freelm_jax.training import runner  # also registers gin's train_lib.train

cli.define_flags()
flags.adopt_module_key_flags(cli)  # --help lists them with the tool's own
flags.DEFINE_string('model_dir', None, 'The trained model_dir.', required=True)
flags.DEFINE_integer('checkpoint_step', None, 'Step to load (default: newest).')
flags.DEFINE_list('tasks', None, 'Teacher tasks (default: the config\'s eval tasks).')
flags.DEFINE_string('split', None, "Split to score (default: the config's eval split).")
FLAGS = flags.FLAGS


def evaluate() -> list[dict]:
  """Restores the checkpoint and evaluates; returns the eval rows."""
  data = settings.DataConfig()
  data = dataclasses.replace(data, eval_tasks=tuple(FLAGS.tasks or data.eval_tasks),
                             eval_split=FLAGS.split or data.eval_split)
  model_config = settings.ModelConfig()
  trainer = settings.build_trainer(  # the run's state: its weights' average included
      model_config, settings.MeshConfig(), settings.create_optimizer,
      1, settings.TeacherObjective(), ema_decay=runner.bound_to_train('ema_decay'))
  settings.check_lengths(data, model_config)
  partitioning.check_batch_size('train_lib.DataConfig.eval_batch_size',
                                data.eval_batch_size, trainer.mesh)
  run_tasks.check_tasks(data)
  manager = checkpoints.create_manager(FLAGS.model_dir, 1)
  state, facts = checkpoints.restore(manager, trainer.abstract_state(),
                                     FLAGS.checkpoint_step)
  if not storage.is_remote(FLAGS.model_dir):
    console.log_to_file(os.path.join(FLAGS.model_dir, 'eval.log'))
  writer = metrics_lib.MetricsWriter(FLAGS.model_dir)
  rows = evaluation.run_eval(trainer, state.eval_params, data, int(state.step),
                             facts.get('trained_task_types', []), writer,
                             facts.get('task_types'))
  writer.close()
  return rows


def main(argv):
  del argv
  # Before JAX starts, any thread runs or a user module is imported.
  prefetch.start_server_by_fork()
  console.quiet_console()
  # The model_dir's operative config, then --gin_file layers on top of it
  # (e.g. gin/eval/glue_paper.gin).
  config = storage.resolve(FLAGS.model_dir) / 'config.gin'
  gin_files = ([str(config)] if config.exists() or not FLAGS.gin_file else []) + FLAGS.gin_file

  def run():
    cli.initialize_distributed()
    gin_utils.import_modules(FLAGS.module_import)
    gin_utils.parse(gin_files, FLAGS.gin_bindings)
    return evaluate()

  print(evaluation.format_table(cli.run_or_exit(run)))


def run():
  """The `freelm-eval` command."""
  cli.run_cli(main)


if __name__ == '__main__':
  run()
