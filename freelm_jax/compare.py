r"""Ablation: the same run under each objective schedule, side by side.

  python -m freelm_jax.compare --gin_file=gin/base.gin --output_dir=runs/compare \
      [--gin_file=...] [--gin.NAME=VALUE ...] [--gin_bindings=...] [--module_import=M]

Trains 'parity', 'lm_only' and 'teacher_only' with the same gin files and
overrides (so the same budget: TRAIN_STEPS steps each), each in
OUTPUT_DIR/<schedule>; re-running resumes each run, and skips one already
finished and evaluated. Then writes OUTPUT_DIR/compare.md (the final accuracy
of every eval task and the LM validation perplexity, one row per schedule)
and OUTPUT_DIR/compare.png (learning curves, `freelm_jax.plots`). For the
curves, EVAL_EVERY = 0 (only the final evaluation) becomes TRAIN_STEPS // 5.
"""

import os
from typing import Sequence

from absl import flags
from absl import logging
import gin
import tabulate

from freelm_jax import console
from freelm_jax import gin_utils
from freelm_jax import plots
from freelm_jax import schedules as schedules_lib

console.quiet_environment()  # before TensorFlow and JAX load

SCHEDULES = tuple(s.name for s in schedules_lib.BUILT_IN)

gin_utils.define_flags()
flags.adopt_module_key_flags(gin_utils)  # --help lists them with the tool's own
flags.DEFINE_string('output_dir', 'runs/compare', 'One model_dir per schedule goes here.')
FLAGS = flags.FLAGS


def _parse(gin_files: Sequence[str], bindings: Sequence[str]) -> None:
  gin.clear_config(clear_constants=True)
  gin_utils.parse(gin_files, bindings)


def run_bindings(gin_files: Sequence[str], bindings: Sequence[str]) -> list[str]:
  """The user's bindings plus EVAL_EVERY = TRAIN_STEPS // 5 where it is 0."""
  _parse(gin_files, bindings)
  steps, every = gin.query_parameter('%TRAIN_STEPS'), gin.query_parameter('%EVAL_EVERY')
  return list(bindings) + ([] if every else [f'EVAL_EVERY = {max(steps // 5, 1)}'])


def finished(model_dir: str, train_steps: int) -> bool:
  """Whether the run has its final evaluation (then it is not re-run)."""
  # lazy: metrics imports clu, hence TensorFlow, which main imports quietly first
  from freelm_jax import metrics  # pylint: disable=g-import-not-at-top
  try:
    rows = metrics.read(model_dir)
  except FileNotFoundError:
    return False
  return any(r['kind'] == 'eval' and r['step'] >= train_steps for r in rows)


def run_all(gin_files: Sequence[str], bindings: Sequence[str], output_dir: str,
            schedules: Sequence[str] = SCHEDULES) -> dict[str, str]:
  """Trains (or resumes) each schedule; returns schedule -> model_dir."""
  # lazy: JAX loads after console.quiet_environment(), called once this module is loaded
  from freelm_jax import train_lib  # pylint: disable=g-import-not-at-top
  bindings = run_bindings(gin_files, bindings)
  dirs = {}
  for schedule in schedules:
    model_dir = dirs[schedule] = os.path.join(output_dir, schedule)
    _parse(gin_files, bindings + [f'OBJECTIVE_SCHEDULE = {schedule!r}',
                                  f'MODEL_DIR = {model_dir!r}'])
    if finished(model_dir, gin.query_parameter('%TRAIN_STEPS')):
      logging.info('%s: already trained and evaluated.', model_dir)
      continue
    logging.info('Training %s in %s.', schedule, model_dir)
    print(f'== {schedule} ({model_dir})', flush=True)
    train_lib.train()
  gin.clear_config(clear_constants=True)
  return dirs


def final_rows(rows: Sequence[dict]) -> dict[str, dict]:
  """task -> its eval row at the last evaluated step."""
  by_step = plots.eval_by_step(rows)
  return by_step[max(by_step)] if by_step else {}


def table(runs: dict[str, Sequence[dict]]) -> str:
  """Markdown: one row per schedule; each eval task's accuracy, the trained
  tasks' mean, the LM validation perplexity."""
  finals = {name: final_rows(rows) for name, rows in runs.items()}
  tasks = list(dict.fromkeys(t for f in finals.values() for t, r in f.items()
                             if 'accuracy' in r))
  held_out = {t for f in finals.values() for t, r in f.items()
              if not r.get('trained', r.get('seen', True))}
  headers = (['schedule', 'step'] + [t + (' (held out)' if t in held_out else '') for t in tasks]
             + ['trained mean', 'LM perplexity'])
  body = []
  for name, final in finals.items():
    accs = [final.get(t, {}).get('accuracy') for t in tasks]
    seen = [a for t, a in zip(tasks, accs) if a is not None and t not in held_out]
    lm = [r['perplexity'] for r in final.values() if 'perplexity' in r]
    step = max((r['step'] for r in final.values()), default=None)
    body.append([name, step] + accs + [sum(seen) / len(seen) if seen else None,
                                       lm[0] if lm else None])
  return tabulate.tabulate(body, headers=headers, tablefmt='github', floatfmt='.3f',
                           missingval='-')


def report(dirs: dict[str, str], output_dir: str) -> tuple[str, str]:
  """Writes compare.md and compare.png for schedule -> model_dir; returns their paths."""
  # lazy: metrics imports clu, hence TensorFlow, which main imports quietly first
  from freelm_jax import metrics  # pylint: disable=g-import-not-at-top
  runs = {name: metrics.read(d) for name, d in dirs.items()}
  md, png = os.path.join(output_dir, 'compare.md'), os.path.join(output_dir, 'compare.png')
  with open(md, 'w') as f:
    f.write(f'# Objective schedules compared\n\nFinal held-out accuracy per eval task '
            f'and LM validation perplexity; curves: compare.png.\n\n'
            f'{table(runs)}\n')
  plots.draw(runs, png)
  return md, png


def main(argv):
  del argv
  console.quiet_console()
  console.import_tensorflow_quietly()

  def run():
    gin_utils.initialize_distributed()
    gin_utils.import_modules(FLAGS.module_import)
    dirs = run_all(FLAGS.gin_file, FLAGS.gin_bindings, FLAGS.output_dir)
    return report(dirs, FLAGS.output_dir)

  md, png = gin_utils.run_or_exit(run)
  with open(md) as f:
    print(f.read())
  print(f'Wrote {md} and {png}.')


def run():
  """The `freelm-compare` command."""
  gin_utils.run_cli(main)


if __name__ == '__main__':
  run()
