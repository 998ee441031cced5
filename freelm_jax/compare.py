r"""Ablation: runs that differ in one thing, side by side, each over seeds.

  python -m freelm_jax.compare --gin_file=gin/base.gin --output_dir=runs/compare \
      [--seeds=0,1,2] [--variant="NAME=BINDING[;BINDING...]" ...] \
      [--gin_file=...] [--gin.NAME=VALUE ...] [--gin_bindings=...] [--module_import=M]

Trains 'parity', 'lm_only' and 'teacher_only', and one run per --variant (the
'parity' schedule with the variant's gin bindings on top, e.g.
--variant="lr_x2=LEARNING_RATE = 1.4e-3"), all with the same gin files and
overrides (so the same budget: TRAIN_STEPS steps each). Each trains once per
seed of --seeds (the SEED macro; by default only the config's SEED), in
OUTPUT_DIR/<run>/seed_<k>; re-running resumes each, and skips one already
finished and evaluated. Then writes OUTPUT_DIR/compare.md (one row per run:
the final accuracy of every eval task, the trained tasks' mean and the LM
validation perplexity, each as mean ± sample standard deviation over the
seeds, with their count n), OUTPUT_DIR/compare.json (every seed's final
values, from which the table is computed) and OUTPUT_DIR/compare.png (mean
learning curves in their min-max band across seeds, `freelm_jax.plots`). For
the curves, EVAL_EVERY = 0 (only the final evaluation) becomes TRAIN_STEPS // 5.
"""

import json
import os
import re
from typing import Mapping, NamedTuple, Optional, Sequence

from absl import flags
from absl import logging
import gin
import tabulate

from freelm_jax import cli
from freelm_jax import plots
from freelm_jax.common import console
from freelm_jax.common import errors
from freelm_jax.common import metrics_files
from freelm_jax.config import gin_utils
from freelm_jax.core import schedules as schedules_lib
from freelm_jax.data import prefetch
from freelm_jax.training import runner

SCHEDULES = tuple(s.name for s in schedules_lib.BUILT_IN)
VARIANT_SCHEDULE = 'parity'  # what a --variant's bindings go on top of
# A run's name is a folder name under OUTPUT_DIR.
_NAME = re.compile(r'[A-Za-z0-9][A-Za-z0-9_.+-]*')

cli.define_flags()
flags.adopt_module_key_flags(cli)  # --help lists them with the tool's own
flags.DEFINE_string('output_dir', 'runs/compare',
                    'Each run goes in OUTPUT_DIR/<run>/seed_<k>, the table and plot here.')
flags.DEFINE_list('seeds', None, 'Seeds to train each run with (the SEED macro), e.g. 0,1,2. '
                  "Default: the config's SEED only.")
flags.DEFINE_multi_string(
    'variant', [], 'NAME=BINDING[;BINDING...]: one more run, the parity schedule with these '
    'gin bindings on top, e.g. --variant="lr_x2=LEARNING_RATE = 1.4e-3". Repeatable.')
FLAGS = flags.FLAGS


class Run(NamedTuple):
  """One training run of the comparison."""
  name: str  # a schedule or a variant
  seed: int
  model_dir: str
  bindings: list[str]  # on top of the user's gin files and bindings


def parse_seeds(values: Optional[Sequence[str]]) -> Optional[list[int]]:
  """--seeds as whole numbers (None: not given); a malformed one is a ConfigError."""
  if values is None:
    return None
  try:
    seeds = [int(v) for v in values]
  except ValueError:
    seeds = []
  if not seeds or len(set(seeds)) != len(seeds):
    raise errors.ConfigError(f'--seeds={",".join(values)}: expected distinct whole numbers '
                             'separated by commas, e.g. --seeds=0,1,2.')
  return seeds


def parse_variants(values: Sequence[str]) -> dict[str, list[str]]:
  """--variant values as name -> its gin bindings; a malformed one is a ConfigError."""
  variants: dict[str, list[str]] = {}
  for value in values:
    name, _, listed = value.partition('=')
    name, bindings = name.strip(), [b.strip() for b in listed.split(';') if b.strip()]
    if not _NAME.fullmatch(name) or not bindings or not all('=' in b for b in bindings):
      problem = ('expected NAME=BINDING[;BINDING...], a NAME of letters, digits and _.+- '
                 'and bindings NAME = VALUE, e.g. --variant="lr_x2=LEARNING_RATE = 1.4e-3"')
    elif name in SCHEDULES or name in variants:
      problem = f'another run is named {name!r}; give the variant its own name'
    else:
      variants[name] = bindings
      continue
    raise errors.ConfigError(f'--variant={value}: {problem}.')
  return variants


def run_groups(variants: Mapping[str, Sequence[str]] = ()) -> dict[str, list[str]]:
  """name -> bindings of each run: the built-in schedules, then the variants."""
  groups = {s: [f'OBJECTIVE_SCHEDULE = {s!r}'] for s in SCHEDULES}
  for name, bindings in dict(variants).items():
    groups[name] = [f'OBJECTIVE_SCHEDULE = {VARIANT_SCHEDULE!r}', *bindings]
  return groups


def _parse(gin_files: Sequence[str], bindings: Sequence[str]) -> None:
  gin.clear_config(clear_constants=True)
  gin_utils.parse(gin_files, bindings)


def run_bindings(gin_files: Sequence[str], bindings: Sequence[str]) -> list[str]:
  """The user's bindings plus EVAL_EVERY = TRAIN_STEPS // 5 where it is 0."""
  _parse(gin_files, bindings)
  steps, every = gin.query_parameter('%TRAIN_STEPS'), gin.query_parameter('%EVAL_EVERY')
  return list(bindings) + ([] if every else [f'EVAL_EVERY = {max(steps // 5, 1)}'])


def plan(gin_files: Sequence[str], bindings: Sequence[str], output_dir: str,
         groups: Mapping[str, Sequence[str]], seeds: Optional[Sequence[int]]) -> list[Run]:
  """Every (run, seed), its config parsed once, so a bad binding stops before any training."""
  bindings = run_bindings(gin_files, bindings)
  if seeds is None:
    try:
      seeds = [gin.query_parameter('%SEED')]
    except ValueError:
      raise errors.ConfigError('The gin files define no SEED macro, which each run of '
                               'the comparison sets.') from None
  runs = []
  for name, extra in groups.items():
    for seed in seeds:
      model_dir = os.path.join(output_dir, name, f'seed_{seed}')
      run = Run(name, seed, model_dir, bindings + list(extra) + [
          f'SEED = {seed}', f'MODEL_DIR = {model_dir!r}'])
      try:
        _parse(gin_files, run.bindings)
      except errors.ConfigError as e:
        if name in SCHEDULES:
          raise
        raise errors.ConfigError(f'--variant={name}: {e}') from e
      runs.append(run)
  gin.clear_config(clear_constants=True)
  return runs


def finished(model_dir: str, train_steps: int) -> bool:
  """Whether the run has its final evaluation (then it is not re-run)."""
  try:
    rows = metrics_files.read(model_dir)
  except FileNotFoundError:
    return False
  return any(r['kind'] == 'eval' and r['step'] >= train_steps for r in rows)


def run_all(gin_files: Sequence[str], bindings: Sequence[str], output_dir: str,
            groups: Optional[Mapping[str, Sequence[str]]] = None,
            seeds: Optional[Sequence[int]] = None) -> dict[str, dict[int, str]]:
  """Trains (or resumes) each run (`run_groups()` by default) with each seed
  (default: the config's SEED); returns name -> seed -> model_dir."""
  dirs: dict[str, dict[int, str]] = {}
  for run in plan(gin_files, bindings, output_dir, groups or run_groups(), seeds):
    dirs.setdefault(run.name, {})[run.seed] = run.model_dir
    _parse(gin_files, run.bindings)
    if finished(run.model_dir, gin.query_parameter('%TRAIN_STEPS')):
      logging.info('%s: already trained and evaluated.', run.model_dir)
      continue
    logging.info('Training %s, seed %d, in %s.', run.name, run.seed, run.model_dir)
    print(f'== {run.name}, seed {run.seed} ({run.model_dir})', flush=True)
    runner.train()
  gin.clear_config(clear_constants=True)
  return dirs


def final_values(rows: Sequence[dict]) -> dict:
  """A run's last evaluation: its step, each task's accuracy (and whether it was
  trained on), the LM validation perplexity."""
  by_step = plots.eval_by_step(rows)
  final = by_step[max(by_step)] if by_step else {}
  tasks = {t: r for t, r in final.items() if 'accuracy' in r}
  lm = [r['perplexity'] for r in final.values() if 'perplexity' in r]
  return {'step': max((r['step'] for r in final.values()), default=None),
          'accuracy': {t: r['accuracy'] for t, r in tasks.items()},
          'trained': {t: r.get('trained', r.get('seen', True)) for t, r in tasks.items()},
          'lm_perplexity': lm[0] if lm else None}


def results(runs: Mapping[str, Mapping[int, Sequence[dict]]]) -> dict:
  """compare.json's content from name -> seed -> metrics rows: the tasks, the
  held-out ones, and each run's final values per seed (what `table` reads)."""
  finals = {name: {seed: final_values(rows) for seed, rows in by_seed.items()}
            for name, by_seed in runs.items()}
  every = [f for by_seed in finals.values() for f in by_seed.values()]
  tasks = list(dict.fromkeys(t for f in every for t in f['accuracy']))
  held_out = [t for t in tasks if any(not f['trained'].get(t, True) for f in every)]
  out = {'tasks': tasks, 'held_out': held_out, 'runs': {}}
  for name, by_seed in finals.items():
    # Every seed's trained mean covers the same tasks (those any seed of the run
    # reports), so that they are comparable; a seed that lacks one has none.
    trained = [t for t in tasks if t not in held_out
               and any(t in f['accuracy'] for f in by_seed.values())]
    out['runs'][name] = [{
        'seed': seed, 'step': f['step'], 'accuracy': f['accuracy'],
        'trained_mean': (sum(f['accuracy'][t] for t in trained) / len(trained)
                         if trained and all(t in f['accuracy'] for t in trained) else None),
        'lm_perplexity': f['lm_perplexity']} for seed, f in by_seed.items()]
  return out


def cell(values: Sequence[Optional[float]], digits: int = 3) -> str:
  """`mean ± sd (n=k)` of the values there (sample sd; one value: `value (n=1)`)."""
  s = plots.spread(values)
  if s is None:
    return '-'
  sd = '' if s.sd is None else f' ± {s.sd:.{digits}f}'
  return f'{s.mean:.{digits}f}{sd} (n={s.n})'


def table(summary: Mapping) -> str:
  """Markdown from `results`: one row per run; each eval task's accuracy, the
  trained tasks' mean, the LM validation perplexity, as `cell`s over seeds."""
  tasks, held_out = summary['tasks'], set(summary['held_out'])
  headers = (['run', 'seeds', 'step'] + [t + (' (held out)' if t in held_out else '')
                                          for t in tasks]
             + ['trained mean', 'LM perplexity'])
  body = []
  for name, seeds in summary['runs'].items():
    steps = sorted({s['step'] for s in seeds if s['step'] is not None})
    step = f'{steps[0]}' + (f'-{steps[-1]}' if len(steps) > 1 else '') if steps else '-'
    body.append([name, ','.join(str(s['seed']) for s in seeds), step]
                + [cell([s['accuracy'].get(t) for s in seeds]) for t in tasks]
                + [cell([s['trained_mean'] for s in seeds]),
                   cell([s['lm_perplexity'] for s in seeds], digits=1)])
  return tabulate.tabulate(body, headers=headers, tablefmt='github', disable_numparse=True)


EXPLAINED = ('Final accuracy per eval task, the trained tasks\' mean (per seed, then over '
             'seeds) and LM validation perplexity. Each cell: mean ± sample standard '
             'deviation (ddof=1) over the seeds that have the value, and their count n '
             '(one seed: its value). Every seed\'s values: compare.json; learning curves '
             '(mean, and min to max across seeds): compare.png.')


def report(dirs: Mapping[str, Mapping[int, str]], output_dir: str) -> tuple[str, str, str]:
  """Writes compare.md, compare.json and compare.png for name -> seed ->
  model_dir; returns their paths."""
  runs = {name: {seed: metrics_files.read(d) for seed, d in by_seed.items()}
          for name, by_seed in dirs.items()}
  summary = results(runs)
  for name, seeds in summary['runs'].items():
    for entry in seeds:
      entry['model_dir'] = dirs[name][entry['seed']]
  paths = [os.path.join(output_dir, f'compare.{ext}') for ext in ('md', 'json', 'png')]
  with open(paths[0], 'w') as f:
    f.write(f'# Runs compared\n\n{EXPLAINED}\n\n{table(summary)}\n')
  with open(paths[1], 'w') as f:
    json.dump(summary, f, indent=1)
  plots.draw({name: list(by_seed.values()) for name, by_seed in runs.items()}, paths[2])
  return tuple(paths)


def main(argv):
  del argv
  # Before JAX starts, any thread runs or a user module is imported.
  prefetch.start_server_by_fork()
  console.quiet_console()

  def run():
    seeds = parse_seeds(FLAGS.seeds)
    groups = run_groups(parse_variants(FLAGS.variant))
    cli.initialize_distributed()
    gin_utils.import_modules(FLAGS.module_import)
    dirs = run_all(FLAGS.gin_file, FLAGS.gin_bindings, FLAGS.output_dir, groups, seeds)
    return report(dirs, FLAGS.output_dir)

  md, json_path, png = cli.run_or_exit(run)
  with open(md) as f:
    print(f.read())
  print(f'Wrote {md}, {json_path} and {png}.')


def run():
  """The `freelm-compare` command."""
  cli.run_cli(main)


if __name__ == '__main__':
  run()
