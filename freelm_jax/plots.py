r"""Learning curves of groups of model_dirs: the mean over each group's runs,
in a band from their minimum to their maximum.

  python -m freelm_jax.plots runs/a runs/b [...] --output=curves.png
  python -m freelm_jax.plots parity=runs/p/seed_0,runs/p/seed_1 \
      lm_only=runs/l/seed_0,runs/l/seed_1 --output=curves.png

A group is NAME=DIR[,DIR...] (typically one configuration under several
seeds); a bare DIR is a group of one, named by its folder. Panels against the
step: held-out teacher accuracy (mean over the trained tasks' validation
splits, and over the held-out tasks where there are any: tasks never trained
on, `trained: false` in the eval rows) and the language stream's validation
loss, from the `kind: "eval"` rows of each model_dir's metrics
(`freelm_jax.common.metrics_files.read`). Evaluations every EVAL_EVERY steps give the
curves their points; a run evaluated only at the end gets one point. At a step
only some runs of a group evaluated, the mean and band are over those.
"""

import math
import os
import statistics
from typing import Mapping, NamedTuple, Optional, Sequence

from absl import app
from absl import flags
import matplotlib
from matplotlib import pyplot as plt

from freelm_jax.common import errors
from freelm_jax.common import metrics_files

PANELS = (('trained', 'accuracy, trained tasks (validation mean)'),
          ('held_out', 'accuracy, held-out tasks (mean)'),
          ('lm_loss', 'LM validation loss (per token)'))


class Spread(NamedTuple):
  """Values of several runs: mean, sample sd (ddof=1; None for one), min, max, count."""
  mean: float
  sd: Optional[float]
  low: float
  high: float
  n: int


def spread(values: Sequence[Optional[float]]) -> Optional[Spread]:
  """The Spread of the values that are there (None: a run without one), else None."""
  present = [float(v) for v in values if v is not None and not math.isnan(v)]
  if not present:
    return None
  sd = statistics.stdev(present) if len(present) > 1 else None
  return Spread(statistics.fmean(present), sd, min(present), max(present), len(present))


def eval_by_step(rows: Sequence[dict]) -> dict[int, dict[str, dict]]:
  """step -> task -> its last eval row (a re-evaluation replaces the earlier one)."""
  out: dict[int, dict[str, dict]] = {}
  for row in rows:
    if row.get('kind') == 'eval' and 'task' in row:
      out.setdefault(int(row['step']), {})[row['task']] = row
  return dict(sorted(out.items()))


def curves(rows: Sequence[dict]) -> dict[str, tuple[list[int], list[float]]]:
  """panel -> (steps, values): mean accuracy of trained / held-out tasks, LM loss."""
  out = {name: ([], []) for name, _ in PANELS}

  def add(name, step, values):
    values = [v for v in values if v is not None]
    if values:
      out[name][0].append(step)
      out[name][1].append(sum(values) / len(values))

  for step, by_task in eval_by_step(rows).items():
    tasks = [r for r in by_task.values() if 'accuracy' in r]
    trained = [r.get('trained', r.get('seen', True)) for r in tasks]
    add('trained', step, [r['accuracy'] for r, t in zip(tasks, trained) if t])
    add('held_out', step, [r['accuracy'] for r, t in zip(tasks, trained) if not t])
    add('lm_loss', step, [r['lm_loss'] for r in by_task.values() if 'lm_loss' in r])
  return out


def band(runs: Sequence[tuple[Sequence[int], Sequence[float]]]) -> tuple[list[int], list[Spread]]:
  """(steps, Spread at each step) of several runs' (steps, values) curves."""
  at: dict[int, list[float]] = {}
  for steps, values in runs:
    for step, value in zip(steps, values):
      at.setdefault(step, []).append(value)
  steps = sorted(at)
  return steps, [spread(at[step]) for step in steps]


def group_curves(groups: Mapping[str, Sequence[Sequence[dict]]]
                 ) -> dict[str, dict[str, tuple[list[int], list[Spread]]]]:
  """label -> panel -> (steps, Spread over the group's runs), from each run's rows."""
  out = {}
  for label, runs in groups.items():
    per_run = [curves(rows) for rows in runs]
    out[label] = {name: band([c[name] for c in per_run]) for name, _ in PANELS}
  return out


def draw(groups: Mapping[str, Sequence[Sequence[dict]]], output: str) -> str:
  """Draws each group's (label -> its runs' metrics rows) mean curves, in their
  min-max band, into `output` (PNG)."""
  matplotlib.use('Agg')  # files only, no display
  by_group = group_curves(groups)
  panels = [(n, t) for n, t in PANELS if any(c[n][0] for c in by_group.values())]
  panels = panels or list(PANELS[:1])
  fig, axes = plt.subplots(1, len(panels), figsize=(5 * len(panels), 3.8), squeeze=False)
  for ax, (name, title) in zip(axes[0], panels):
    for label, group in by_group.items():
      steps, spreads = group[name]
      if not steps:
        continue
      runs = len(groups[label])
      line, = ax.plot(steps, [s.mean for s in spreads], marker='o',
                      label=label if runs == 1 else f'{label} (n={runs})')
      if runs > 1:
        ax.fill_between(steps, [s.low for s in spreads], [s.high for s in spreads],
                        color=line.get_color(), alpha=0.2, linewidth=0)
    ax.set_title(title, fontsize=10)
    ax.set_xlabel('step')
    ax.grid(alpha=0.3)
    if name != 'lm_loss':
      ax.axhline(0.5, color='grey', linestyle=':', linewidth=1)
  axes[0][0].legend(fontsize=9)
  if any(len(runs) > 1 for runs in groups.values()):
    fig.text(0.01, 0.01, 'lines: mean over runs; bands: min to max', fontsize=8)
  fig.tight_layout(rect=(0, 0.03, 1, 1))
  os.makedirs(os.path.dirname(os.path.abspath(output)), exist_ok=True)
  fig.savefig(output, dpi=100)
  plt.close(fig)
  return output


def parse_groups(args: Sequence[str]) -> dict[str, list[str]]:
  """Command-line groups, NAME=DIR[,DIR...] or a bare DIR (a group of one named
  by its folder), as label -> model_dirs; a malformed one is a ConfigError."""
  groups: dict[str, list[str]] = {}
  for arg in args:
    label, equals, listed = arg.partition('=')
    # a folder may have '=' in its name: runs/lr=1e-3, or an existing lr=1e-3
    if equals and '/' not in label and not os.path.isdir(arg):
      dirs = [d for d in listed.split(',') if d]
      if not label or not dirs:
        raise errors.ConfigError(f'{arg!r}: expected NAME=DIR[,DIR...] or a model_dir.')
    else:
      label, dirs = os.path.basename(os.path.normpath(arg)), [arg]
    if label in groups:
      raise errors.ConfigError(f'two groups are named {label!r}; name them: NAME=DIR[,DIR...].')
    groups[label] = dirs
  return groups


def draw_groups(groups: Mapping[str, Sequence[str]], output: str) -> str:
  """`draw` for groups of model_dirs (label -> model_dirs)."""
  return draw({label: [metrics_files.read(d) for d in dirs] for label, dirs in groups.items()},
              output)


def main(argv):
  if len(argv) < 2:
    errors.exit_with('name at least one model_dir: python -m freelm_jax.plots '
                     '[NAME=]DIR[,DIR...] ...')
  with errors.exit_on(OSError, ValueError):
    print(draw_groups(parse_groups(argv[1:]), flags.FLAGS.output))


def run():
  """The `freelm-plots` command."""
  flags.DEFINE_string('output', 'curves.png', 'The PNG file to write.')
  app.run(main)


if __name__ == '__main__':
  run()
