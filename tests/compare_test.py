"""make compare (runs over seeds, side by side) and the learning-curve plots."""

import json
import os
import statistics
import subprocess
import sys

import gin
from matplotlib import axes as axes_lib
from matplotlib import image
import pytest

from freelm_jax import compare
from freelm_jax import plots
from freelm_jax.common import errors
from freelm_jax.config import gin_utils
from freelm_jax.config import settings
from freelm_jax.training import runner

REPO = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
TINY = [
    'network.ModelConfig.num_layers = 1', 'network.ModelConfig.d_model = 32',
    'network.ModelConfig.num_heads = 2', 'LM_BATCH_SIZE = 8', 'TEACHER_BATCH_SIZE = 8',
    'LM_SEQ_LEN = 32', 'TEACHER_SEQ_LEN = 32', 'WARMUP_STEPS = 1',
    'train_lib.DataConfig.eval_max_examples = 2', 'LM_EVAL_BATCHES = 1',
    'train_lib.DataConfig.eval_probe = False',  # lm_eval_test checks the probe
]


def _rows(schedule_offset: float, steps=(2, 4), drop=()) -> list[dict]:
  """Eval rows of a fake run: two trained tasks, one held out, the LM (less `drop`)."""
  rows = [{'step': 1, 'kind': 'train', 'objective': 'lm', 'loss': 9.0}]
  for step in steps:
    acc = 0.5 + schedule_offset * step
    rows += [
        {'step': step, 'kind': 'eval', 'task': 'lm_task', 'split': 'validation',
         'lm_loss': 9.0 - step * 0.1, 'perplexity': 2.0 ** step, 'num_tokens': 10},
        {'step': step, 'kind': 'eval', 'task': 'a', 'accuracy': acc, 'trained': True},
        {'step': step, 'kind': 'eval', 'task': 'b_sst2', 'accuracy': acc + 0.1, 'trained': True},
        {'step': step, 'kind': 'eval', 'task': 'c', 'accuracy': 0.4, 'trained': False}]
  return [r for r in rows if r.get('task') not in drop]


def _cells(line: str) -> list[str]:
  return [c.strip() for c in line.split('|')[1:-1]]


def _assert_png(path):
  with open(path, 'rb') as f:
    assert f.read(8) == b'\x89PNG\r\n\x1a\n'
  height, width, _ = image.imread(path).shape
  assert height > 100 and width > 300


def test_spread_is_mean_sample_sd_min_max_and_count():
  s = plots.spread([0.5, None, 0.7, 0.9])  # None: a run without the value
  assert (s.mean, s.sd, s.low, s.high, s.n) == pytest.approx((0.7, 0.2, 0.5, 0.9, 3))
  assert plots.spread([0.25]) == (0.25, None, 0.25, 0.25, 1)  # one: no spread
  assert plots.spread([None]) is None and plots.spread([]) is None
  assert compare.cell([0.5, 0.7, 0.9]) == '0.700 ± 0.200 (n=3)'
  assert compare.cell([0.25]) == '0.250 (n=1)' and compare.cell([None]) == '-'


def test_curves_band_over_the_runs_of_a_group():
  steps, values = plots.curves(_rows(0.01))['trained']
  assert steps == [2, 4] and values == pytest.approx([0.57, 0.59])
  assert plots.curves(_rows(0.01))['lm_loss'] == ([2, 4], pytest.approx([8.8, 8.6]))
  steps, spreads = plots.band([([2, 4], [0.5, 0.7]), ([2, 4, 6], [0.6, 0.9, 0.8])])
  assert steps == [2, 4, 6]
  assert [v for s in spreads for v in (s.mean, s.low, s.high, s.n)] == pytest.approx(
      [0.55, 0.5, 0.6, 2, 0.8, 0.7, 0.9, 2, 0.8, 0.8, 0.8, 1])


def test_table_and_json_aggregate_each_value_over_seeds():
  runs = {'parity': {0: _rows(0.01), 1: _rows(0.02, drop=('a',))},  # seed 1 lacks task a
          'lm_only': {0: _rows(0.0)}}
  summary = compare.results(runs)
  assert summary['tasks'] == ['a', 'b_sst2', 'c'] and summary['held_out'] == ['c']
  parity = summary['runs']['parity']
  assert [s['seed'] for s in parity] == [0, 1] and 'a' not in parity[1]['accuracy']
  assert parity[1]['trained_mean'] is None  # it lacks a trained task of its run
  assert parity[0]['trained_mean'] == pytest.approx(0.59)  # mean of a, b_sst2 at step 4
  table = compare.table(json.loads(json.dumps(summary))).splitlines()  # as compare.json
  assert _cells(table[0]) == ['run', 'seeds', 'step', 'a', 'b_sst2', 'c (held out)',
                              'trained mean', 'LM perplexity']
  row = dict(zip(_cells(table[0]), _cells(table[2])))
  assert row['run'] == 'parity' and row['seeds'] == '0,1' and row['step'] == '4'
  b = [s['accuracy']['b_sst2'] for s in parity]
  assert row['b_sst2'] == f'{statistics.fmean(b):.3f} ± {statistics.stdev(b):.3f} (n=2)'
  assert row['a'].endswith('(n=1)') and '±' not in row['a']
  assert row['trained mean'].endswith('(n=1)') and row['LM perplexity'].endswith('(n=2)')
  lm_only = dict(zip(_cells(table[0]), _cells(table[3])))
  assert lm_only['c (held out)'] == '0.400 (n=1)'


def test_draw_bands_groups_of_several_runs(tmp_path, monkeypatch):
  bands = []
  fill_between = axes_lib.Axes.fill_between
  monkeypatch.setattr(axes_lib.Axes, 'fill_between',
                      lambda ax, x, *a, **k: bands.append(list(x)) or fill_between(ax, x, *a, **k))
  groups = {'parity': [_rows(0.01), _rows(0.02)], 'lm_only': [_rows(0.0)]}
  _assert_png(plots.draw(groups, str(tmp_path / 'out' / 'curves.png')))
  assert bands == [[2, 4]] * 3  # parity's, in each panel; none for a group of one


def test_plots_groups_from_the_command_line(tmp_path):
  (tmp_path / 'lr=1e-3').mkdir()  # a folder with '=' in its name
  groups = plots.parse_groups(['p=runs/a,runs/b', 'runs/c/', str(tmp_path / 'lr=1e-3'),
                               'runs/lr=2e-3'])
  assert groups == {'p': ['runs/a', 'runs/b'], 'c': ['runs/c/'],
                    'lr=1e-3': [str(tmp_path / 'lr=1e-3')], 'lr=2e-3': ['runs/lr=2e-3']}
  for bad in (['p='], ['=runs/a'], ['p=,'], ['p=runs/a', 'p=runs/b'], ['x/a', 'y/a']):
    with pytest.raises(errors.ConfigError):
      plots.parse_groups(bad)


def test_plots_cli_draws_groups_of_model_dirs(tmp_path):
  for name, offset in (('a', 0.0), ('b', 0.02), ('c', 0.01)):
    (tmp_path / name).mkdir()
    (tmp_path / name / 'metrics.jsonl').write_text(
        ''.join(json.dumps(r) + '\n' for r in _rows(offset)))
  out = tmp_path / 'curves.png'
  result = subprocess.run(
      [sys.executable, '-m', 'freelm_jax.plots', f'ab={tmp_path / "a"},{tmp_path / "b"}',
       str(tmp_path / 'c'), f'--output={out}'], cwd=REPO, capture_output=True, text=True,
      timeout=300)
  assert result.returncode == 0, result.stderr[-2000:]
  _assert_png(out)
  missing = subprocess.run(
      [sys.executable, '-m', 'freelm_jax.plots', f'x={tmp_path / "a"},{tmp_path / "nope"}'],
      cwd=REPO, capture_output=True, text=True, timeout=300)
  assert missing.returncode != 0 and missing.stderr.strip().splitlines()[-1].startswith(
      'error: ') and 'metrics.jsonl' in missing.stderr
  imported = subprocess.run(  # plots reads JSON lines: it starts without TensorFlow or JAX
      [sys.executable, '-c', 'import sys, freelm_jax.plots; print(sorted(m for m in sys.modules'
       ' if m.split(".")[0] in ("tensorflow", "jax", "clu")))'],
      cwd=REPO, capture_output=True, text=True, timeout=300)
  assert imported.stdout.strip() == '[]', imported.stderr[-2000:]


def test_seeds_and_variants_flags_are_checked():
  assert compare.parse_seeds(['0', '2']) == [0, 2] and compare.parse_seeds(None) is None
  assert compare.parse_variants(['lr_x2=LEARNING_RATE = 1.4e-3', 'two=A = 1; B = 2;']) == {
      'lr_x2': ['LEARNING_RATE = 1.4e-3'], 'two': ['A = 1', 'B = 2']}
  for bad in (['a'], ['0', '0'], []):
    with pytest.raises(errors.ConfigError, match=r'^--seeds='):
      compare.parse_seeds(bad)
  for bad in (['lr'], ['lr='], ['=A = 1'], ['a/b=A = 1'], ['lr=A'], ['parity=A = 1'],
              ['v=A = 1', 'v=B = 2']):
    with pytest.raises(errors.ConfigError, match=r'^--variant=') as e:
      compare.parse_variants(bad)
    assert '\n' not in str(e.value)


def test_plan_trains_each_run_with_each_seed():
  groups = compare.run_groups({'lr_x2': ['LEARNING_RATE = 1.4e-3']})
  assert list(groups) == [*compare.SCHEDULES, 'lr_x2']
  groups = {name: groups[name] for name in ('lm_only', 'lr_x2')}  # fewer configs to parse
  try:
    runs = compare.plan(['gin/base.gin'], ['TRAIN_STEPS = 50'], 'out', groups, [3, 4])
    assert [(r.name, r.seed) for r in runs] == [
        (n, s) for n in ('lm_only', 'lr_x2') for s in (3, 4)]
    assert "OBJECTIVE_SCHEDULE = 'lm_only'" in runs[0].bindings
    variant = runs[-1]
    assert variant.model_dir == os.path.join('out', 'lr_x2', 'seed_4')
    assert {"OBJECTIVE_SCHEDULE = 'parity'", 'LEARNING_RATE = 1.4e-3', 'SEED = 4',
            'EVAL_EVERY = 10'} <= set(variant.bindings)
    default = compare.plan(['gin/base.gin'], ['SEED = 7'], 'out', groups, None)
    assert {r.seed for r in default} == {7}  # the config's SEED
    with pytest.raises(errors.ConfigError, match=r'^--variant=bad: .*NO_SUCH_MACRO'):
      compare.plan(['gin/base.gin'], [], 'out',
                   compare.run_groups({'bad': ['NO_SUCH_MACRO = 1']}), [0])
  finally:
    gin.clear_config(clear_constants=True)


def test_eval_every_defaults_to_a_fifth_of_the_steps():
  try:
    assert compare.run_bindings(['gin/base.gin'], ['TRAIN_STEPS = 50'])[-1] == 'EVAL_EVERY = 10'
    assert compare.run_bindings(['gin/base.gin'], ['TRAIN_STEPS = 50', 'EVAL_EVERY = 7']) == [
        'TRAIN_STEPS = 50', 'EVAL_EVERY = 7']
  finally:
    gin.clear_config(clear_constants=True)


def test_compare_trains_each_schedule_and_seed_then_writes_table_json_and_curves(tmp_path):
  gin.clear_config(clear_constants=True)
  gin_utils.parse(['gin/base.gin'], [])
  eval_tasks = list(settings.DataConfig().eval_tasks)
  gin.clear_config(clear_constants=True)
  two_tasks = f'train_lib.DataConfig.eval_tasks = {[eval_tasks[0], eval_tasks[-1]]!r}'
  bindings = TINY + ['TRAIN_STEPS = 2', 'EVAL_EVERY = 2', two_tasks]
  dirs = compare.run_all(['gin/base.gin'], bindings, str(tmp_path), seeds=[0, 1])
  assert dirs == {s: {k: str(tmp_path / s / f'seed_{k}') for k in (0, 1)}
                  for s in compare.SCHEDULES}
  md, json_path, png = compare.report(dirs, str(tmp_path))
  text = open(md).read()
  assert 'standard deviation' in text
  table = [l for l in text.splitlines() if l.startswith('|')]
  assert [_cells(l)[0] for l in table[2:]] == list(compare.SCHEDULES)
  assert eval_tasks[0] in table[0] and eval_tasks[-1] in table[0] and 'perplexity' in table[0]
  for line in table[2:]:  # every value over both seeds
    assert all(' ± ' in c and c.endswith('(n=2)') for c in _cells(line)[3:]), line
  summary = json.load(open(json_path))
  for schedule in compare.SCHEDULES:
    seeds = summary['runs'][schedule]
    assert [s['seed'] for s in seeds] == [0, 1]
    assert all(set(s['accuracy']) == {eval_tasks[0], eval_tasks[-1]} and s['lm_perplexity']
               and s['step'] == 2 for s in seeds)
    for seed, model_dir in dirs[schedule].items():  # each ran its schedule and seed
      config = open(os.path.join(model_dir, 'config.gin')).read()
      assert f"OBJECTIVE_SCHEDULE = '{schedule}'" in config and f'SEED = {seed}' in config
  _assert_png(png)
  metrics = os.path.join(dirs['parity'][1], 'metrics.jsonl')
  mtime = os.path.getmtime(metrics)
  compare.run_all(['gin/base.gin'], bindings, str(tmp_path), seeds=[0, 1])  # all finished
  assert os.path.getmtime(metrics) == mtime
