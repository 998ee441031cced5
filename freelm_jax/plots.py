r"""Learning curves of model_dirs, one line per run.

  python -m freelm_jax.plots runs/a runs/b [...] --output=curves.png

Panels against the step: held-out teacher accuracy (mean over the trained
tasks' validation splits, and over the held-out tasks where there are any:
tasks never trained on, `trained: false` in the eval rows) and the language
stream's validation loss, from the `kind: "eval"` rows of each model_dir's
metrics (`freelm_jax.metrics.read`). Evaluations every EVAL_EVERY steps give
the curves their points; a run evaluated only at the end gets one point.
"""

import os
from typing import Mapping, Optional, Sequence

from absl import app
from absl import flags
import matplotlib
from matplotlib import pyplot as plt

from freelm_jax import errors

PANELS = (('trained', 'accuracy, trained tasks (validation mean)'),
          ('held_out', 'accuracy, held-out tasks (mean)'),
          ('lm_loss', 'LM validation loss (per token)'))


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


def draw(runs: Mapping[str, Sequence[dict]], output: str) -> str:
  """Draws each run's (label -> metrics rows) curves into `output` (PNG)."""
  matplotlib.use('Agg')  # files only, no display
  by_run = {label: curves(rows) for label, rows in runs.items()}
  panels = [(n, t) for n, t in PANELS if any(c[n][0] for c in by_run.values())]
  panels = panels or list(PANELS[:1])
  fig, axes = plt.subplots(1, len(panels), figsize=(5 * len(panels), 3.8), squeeze=False)
  for ax, (name, title) in zip(axes[0], panels):
    for label, run_curves in by_run.items():
      steps, values = run_curves[name]
      if steps:
        ax.plot(steps, values, marker='o', label=label)
    ax.set_title(title, fontsize=10)
    ax.set_xlabel('step')
    ax.grid(alpha=0.3)
    if name != 'lm_loss':
      ax.axhline(0.5, color='grey', linestyle=':', linewidth=1)
  axes[0][0].legend(fontsize=9)
  fig.tight_layout()
  os.makedirs(os.path.dirname(os.path.abspath(output)), exist_ok=True)
  fig.savefig(output, dpi=100)
  plt.close(fig)
  return output


def draw_model_dirs(model_dirs: Sequence[str], output: str,
                    labels: Optional[Sequence[str]] = None) -> str:
  """`draw` for model_dirs, labelled by their folder names (or `labels`)."""
  # lazy: metrics imports clu, hence TensorFlow, which compare imports quietly first
  from freelm_jax import metrics  # pylint: disable=g-import-not-at-top
  labels = labels or [os.path.basename(os.path.normpath(d)) for d in model_dirs]
  return draw({label: metrics.read(d) for label, d in zip(labels, model_dirs)}, output)


def main(argv):
  if len(argv) < 2:
    errors.exit_with('name at least one model_dir: python -m freelm_jax.plots DIR [DIR ...]')
  with errors.exit_on(OSError, ValueError):
    print(draw_model_dirs(argv[1:], flags.FLAGS.output))


def run():
  """The `freelm-plots` command."""
  flags.DEFINE_string('output', 'curves.png', 'The PNG file to write.')
  app.run(main)


if __name__ == '__main__':
  run()
