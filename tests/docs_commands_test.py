r"""Every command in the docs works as written, short of running it.

Each command of ours in README.md, BENCHMARKS.md and docs/*.md (`python -m
MODULE ...` or an installed command, in code blocks and inline code, with
`\` continuations) must name a module that exists and, for our tools, flags
the tool defines. Its gin files must exist and parse together with its
bindings: every `--gin.NAME` a macro of those files, every binding a real
configurable and parameter, every task or mixture named (`--tasks`, plain
names in `train_lib.DataConfig`) registered. Gin flags outside a command
and ```gin blocks are checked on the default run (gin/base.gin).
`freelm_jax.eval` layers its gin files on the run that a train command with
the same `--model_dir` makes (else on the default run). A module that a doc
defines (a Python block starting `# NAME.py`) serves `--module_import=NAME`.

Placeholders are skipped: bracketed optional parts (`[--tasks=a,b]`), anything
with `...`, and values in capitals (`--gin.TRAIN_STEPS=N`, `--model_dir=DIR`).

The checks run in a subprocess (this file as a script): importing the tools
and the docs' modules fills registries (flags, schedules, seqio tasks) that
other tests in this process must not see.
"""

import argparse
import functools
import glob
import importlib.util
import json
import os
import re
import runpy
import shlex
import subprocess
import sys
import tempfile
from typing import Optional
from unittest import mock
import warnings

import pytest

import doc_snippets

REPO = doc_snippets.REPO
# Tools whose config is a trained model_dir's config.gin plus their own gin files.
READS_MODEL_DIR_CONFIG = ('freelm_jax.eval',)
# The run a model_dir comes from when no doc command trains it (`make demo`).
DEFAULT_RUN = ('gin/base.gin',)
# Flags absl's app.run defines (name -> whether boolean).
ABSL_RUN_FLAGS = {'help': True, 'helpshort': True, 'helpfull': True, 'helpxml': True,
                  'flagfile': False, 'undefok': False}

# A doc of broken commands (line: what is wrong) and one working command per
# kind of placeholder; the checker must report exactly the broken lines.
BROKEN_DOC = '''\
# Broken

```bash
python -m freelm_jax.no_such_tool --steps=1
python -m freelm_jax.train --gin_file=gin/base.gin --no_such_flag=1
python -m freelm_jax.train --gin_file=gin/no_such_layer.gin
python -m freelm_jax.train --gin_file=gin/base.gin \\
    --gin.TRAIN_STEPZ=3
python -m freelm_jax.plan --gin_file=gin/base.gin --gin_bindings="train_lib.train.no_such=1"
python -m freelm_jax.data.bench_input --no_such_option=1
python -m freelm_jax.eval --model_dir=runs/opinions --gin.GLUE_TRAIN_SPLIT="'train'"
python -m freelm_jax.train --gin_file=gin/base.gin --module_import=no_such_module
python -m freelm_jax.eval --model_dir=DIR --tasks=opinions_party,no_such_task
python -m freelm_jax.train --gin_file=gin/base.gin \\
    --gin_bindings="train_lib.DataConfig.teacher_mixture='no_such_mixture'"
```

Inline: `--gin.NO_SUCH_MACRO=1`, `--gin_bindings="network.ModelConfig.no_such=2"`.

```bash
python -m freelm_jax.train --gin_file=gin/base.gin [--gin.NAME=VALUE ...] \\
    --gin.TRAIN_STEPS=N --gin_file=... --model_dir=DIR
python -m freelm_jax.bench --gin_file=gin/base.gin --nolm_segment_ids --steps=N
python -m freelm_jax.train --gin_file=gin/base.gin --gin_file=gin/data/glue_local.gin \\
    --model_dir=runs/glue
python -m freelm_jax.eval --model_dir=runs/glue --gin.GLUE_TRAIN_SPLIT="'train'" \\
    --tasks=opinions_party
python -m freelm_jax.data.bench_input --seconds=1 && python -m tasks.opinions
```

Inline: `--gin.GLUE_VOCAB_DIR=None --gin.VOCAB_SIZE=8192`, `--gin.LEARNING_RATE`.

```gin
network.ModelConfig.num_layers = 1
network.ModelConfig.no_such_parameter = 1
```
'''
BROKEN_LINES = {4, 5, 6, 7, 9, 10, 11, 12, 13, 14, 18, 34}


# ---- The checker (runs in the subprocess) ----

class _ParsesArguments(BaseException):
  """Stops a tool where it parses its arguments (a BaseException, so that the
  tool's own `except Exception` does not catch it)."""

  def __init__(self, parser=None):
    super().__init__()
    self.parser = parser


@functools.lru_cache(maxsize=None)
def tool_flags(module: str) -> Optional[dict[str, bool]]:
  """The flags `python -m module` accepts, name -> whether boolean, or None if
  it parses no arguments with absl or argparse. The module runs as __main__
  until it would parse them; flags it defined are removed afterwards, so the
  next tool can define its own."""
  from absl import app  # pylint: disable=g-import-not-at-top
  from absl import flags  # pylint: disable=g-import-not-at-top
  before = set(flags.FLAGS)

  def stop_absl(*unused_args, **unused_kwargs):
    raise _ParsesArguments()

  def stop_argparse(parser, *unused_args, **unused_kwargs):
    raise _ParsesArguments(parser)

  stop = None
  with mock.patch.object(app, 'run', stop_absl), \
      mock.patch.object(argparse.ArgumentParser, 'parse_known_args', stop_argparse), \
      warnings.catch_warnings():
    warnings.simplefilter('ignore', RuntimeWarning)  # runpy: "found in sys.modules"
    try:
      runpy.run_module(module, run_name='__main__', alter_sys=True)
    except _ParsesArguments as e:
      stop = e
    finally:
      defined = {name: flags.FLAGS[name].boolean for name in flags.FLAGS}
      for name in set(flags.FLAGS) - before:
        if name in flags.FLAGS:
          delattr(flags.FLAGS, name)
  if stop is None:
    return None
  if stop.parser is not None:
    options = stop.parser._option_string_actions  # pylint: disable=protected-access
    return {option.lstrip('-'): False for option in options}
  return defined | ABSL_RUN_FLAGS


def _flag(arg: str) -> tuple[str, Optional[str]]:
  name, _, value = arg.lstrip('-').partition('=')
  return name, (value if '=' in arg else None)


def _placeholder(value: Optional[str]) -> bool:
  return value is not None and ('...' in value or bool(re.fullmatch(r'[A-Z][A-Z_]*', value)))


def gin_args(args) -> tuple[list[str], list[str], list[str], list[str]]:
  """Gin files, bindings, modules and names to check by name only, from flags."""
  files, bindings, modules, names = [], [], [], []
  for arg in args:
    name, value = _flag(arg)
    if name.startswith('gin.'):
      name, value = 'gin_bindings', (name[len('gin.'):] + ('' if value is None else '=' + value))
    if value is None or not arg.startswith('-') or ('...' in value and name != 'gin_bindings'):
      continue
    if name == 'gin_file':
      files.append(value)
    elif name == 'module_import':
      modules.append(value)
    elif name == 'gin_bindings':
      target, equals, rhs = value.partition('=')
      if target.strip() in ('NAME', '') or '...' in target:
        continue
      if not equals:
        names.append(target.strip())
      else:
        bindings.append(f'{target}= None' if _placeholder(rhs.strip()) else value)
  return files, bindings, modules, names


def unknown_data_names(tasks) -> list[str]:
  """`tasks` and the task and mixture names of the parsed config that seqio
  does not know (names only: references such as `@glue.local_mixture()`
  register their tasks when called, from files a doc's reader has)."""
  import gin  # pylint: disable=g-import-not-at-top
  import seqio  # pylint: disable=g-import-not-at-top
  names = list(tasks)
  for parameter in ('lm_task', 'teacher_mixture', 'eval_tasks'):
    try:
      value = gin.query_parameter(f'train_lib.DataConfig.{parameter}')
    except ValueError:  # not bound
      continue
    names += [v for v in (value if isinstance(value, (list, tuple)) else [value])
              if isinstance(v, str)]
  known = set(seqio.TaskRegistry.names()) | set(seqio.MixtureRegistry.names())
  return [name for name in names if name not in known]


# Tools that never load weights: they parse with INIT_FROM unread, as they do
# themselves (`train_lib.trainer_without_data`).
LOADS_NO_WEIGHTS = ('freelm_jax.plan', 'freelm_jax.bench')


def gin_problem(files, bindings, modules, names=(), tasks=(),
                unread=()) -> Optional[str]:
  """Why the files and bindings do not parse together, or name a task or
  mixture that does not exist; None if they are fine."""
  # pylint: disable=g-import-not-at-top
  import gin
  from freelm_jax.config import gin_utils
  # What the train and eval commands import before they parse (their configurables).
  from freelm_jax.training import evaluation, runner  # pylint: disable=unused-import
  gin.clear_config(clear_constants=True)
  try:
    gin_utils.import_modules(modules)
    gin_utils.parse(files, list(bindings) + [f'{name} = None' for name in names],
                    unread_macros=unread)
    unknown = unknown_data_names(tasks)
  except ValueError as e:  # ConfigError, or gin's own (a macro no file defines)
    return ' '.join(str(e).split('config string:')[0].split())
  finally:
    gin.clear_config(clear_constants=True)
  return f'no seqio task or mixture {", ".join(unknown)}' if unknown else None


@functools.lru_cache(maxsize=None)
def macros_of_gin_files() -> frozenset:
  """Every macro some gin file of the repository defines."""
  found = set()
  for path in glob.glob(os.path.join(REPO, 'gin', '**', '*.gin'), recursive=True):
    with open(path) as f:
      found |= set(re.findall(r'^([A-Z][A-Z0-9_]*)\s*=', f.read(), re.MULTILINE))
  return frozenset(found)


def command_problems(command, runs) -> list[str]:
  """What is wrong with one command; `runs` maps a model_dir to
  the gin files and bindings of the command that trains it."""
  try:
    exists = importlib.util.find_spec(command.module) is not None
  except ImportError:
    exists = False
  if not exists:
    return [f'no module {command.module}']
  if not command.module.startswith('freelm_jax.'):
    return []
  try:
    known = tool_flags(command.module)
  except Exception as e:  # pylint: disable=broad-except
    return [f'{command.module} fails before parsing its flags: {type(e).__name__}: {e}']
  if known is None:
    return [f'{command.module} parses no flags (absl or argparse)']
  problems = []
  for arg in command.args:
    name, _ = _flag(arg)
    if not arg.startswith('-') or '...' in name:
      continue
    gin_flag = name.startswith('gin.') and 'gin_bindings' in known
    negated = name.startswith('no') and known.get(name[2:], False)
    if not (name in known or gin_flag or negated):
      problems.append(f'{command.module} has no flag --{name}')
  if 'gin_file' in known:
    files, bindings, modules, names = gin_args(command.args)
    values = dict(_flag(a) for a in command.args)
    if command.module in READS_MODEL_DIR_CONFIG:
      run_files, run_bindings = runs.get(values.get('model_dir'), (DEFAULT_RUN, ()))
      files, bindings = list(run_files) + files, list(run_bindings) + bindings
    tasks = [] if _placeholder(values.get('tasks')) else (values.get('tasks') or '').split(',')
    unread = ('INIT_FROM',) if command.module in LOADS_NO_WEIGHTS else ()
    problem = gin_problem(files, bindings, modules, names, [t for t in tasks if t], unread)
    problems += [problem] if problem else []
  return problems


def gin_only_problems(snippet) -> list[str]:
  """Gin flags outside a command: files and bindings that parse together on
  the default run; with no file, macros some gin file defines and bindings
  that parse on the default run."""
  try:
    args = shlex.split(snippet.text, comments=True)
  except ValueError as e:  # the shell cannot split it
    return [str(e)]
  files, bindings, modules, names = gin_args(args)
  if files:
    files = [f for f in DEFAULT_RUN if f not in files] + files
    problem = gin_problem(files, bindings, modules, names)
    return [problem] if problem else []
  problems = []
  for binding in bindings + names:
    target = binding.partition('=')[0].strip()
    if '.' not in target and '/' not in target:
      if target not in macros_of_gin_files():
        problems.append(f'--gin.{target}: no gin file defines the macro {target}')
      continue
    problem = gin_problem(DEFAULT_RUN, [binding], modules)
    problems += [problem] if problem else []
  return problems


def check_docs(docs, module_dir: str) -> dict:
  """Every problem of the docs' commands, as 'doc:line: command: problem';
  the modules the docs define are written to `module_dir`."""
  found = [s for doc in docs for s in doc_snippets.snippets(doc)]
  for name, code in doc_snippets.module_files(found).items():
    with open(os.path.join(module_dir, f'{name}.py'), 'w') as f:
      f.write(code)
  sys.path.insert(0, module_dir)  # for --module_import=NAME
  problems, commands, runs = [], [], {}
  for snippet in found:
    try:
      in_snippet = doc_snippets.commands(snippet)
    except ValueError as e:  # the shell cannot split it
      problems.append(f'{snippet.where}: {snippet.text[:80]}: {e}')
      continue
    commands += [(snippet, c) for c in in_snippet]
    if snippet.lang == 'gin':  # bindings, layered on the default run
      problem = gin_problem(DEFAULT_RUN, [snippet.text], [])
      problems += [f'{snippet.where}: gin block: {problem}'] if problem else []
    if not in_snippet and re.search(r'--gin[._]', snippet.text):
      problems += [f'{snippet.where}: {snippet.text[:80]}: {p}'
                   for p in gin_only_problems(snippet)]
  for _, command in commands:
    model_dir = dict(_flag(a) for a in command.args).get('model_dir')
    if command.module == 'freelm_jax.train' and model_dir:
      files, bindings, _, _ = gin_args(command.args)
      runs.setdefault(model_dir, (files, bindings))
  for snippet, command in commands:
    problems += [f'{snippet.where}: {command.text[:100]}: {p}'
                 for p in command_problems(command, runs)]
  return {'problems': problems, 'commands': [[c.module, c.text] for _, c in commands]}


# ---- The tests ----

def _check_in_subprocess(docs) -> dict:
  path = [REPO, os.path.dirname(os.path.abspath(__file__)), os.environ.get('PYTHONPATH', '')]
  env = dict(os.environ, PYTHONPATH=os.pathsep.join(p for p in path if p))
  result = subprocess.run([sys.executable, __file__, *docs], cwd=REPO, env=env,
                          capture_output=True, text=True, timeout=600)
  assert result.returncode == 0, result.stderr[-3000:]
  return json.loads(result.stdout.splitlines()[-1])


@pytest.fixture(scope='module')
def checked(tmp_path_factory):
  """The repository's docs and BROKEN_DOC, checked in one subprocess."""
  broken = tmp_path_factory.mktemp('docs') / 'broken.md'
  broken.write_text(BROKEN_DOC)
  return _check_in_subprocess(doc_snippets.doc_files() + [str(broken)]), str(broken)


def test_every_command_in_the_docs_works_as_written(checked):
  results, broken = checked
  problems = [p for p in results['problems'] if not p.startswith(broken)]
  assert not problems, '\n' + '\n'.join(problems)


def test_the_commands_of_every_doc_and_tool_are_found(checked):
  results, _ = checked
  tools = {module for module, _ in results['commands']}
  assert {'freelm_jax.train', 'freelm_jax.eval', 'freelm_jax.score', 'freelm_jax.convert',
          'freelm_jax.plan', 'freelm_jax.bench', 'freelm_jax.compare'} <= tools
  multi_line = [c for m, c in results['commands'] if m == 'freelm_jax.bench' and '0.3b' in c]
  assert multi_line and '--steps=20' in multi_line[0]  # continued lines are joined


def test_commands_are_read_as_the_shell_reads_them(monkeypatch):
  monkeypatch.setattr(doc_snippets, 'console_scripts',
                      lambda: {'freelm-train': 'freelm_jax.train'})
  text = """```bash
python -m freelm_jax.eval --model_dir=DIR [--tasks=a,b] \\
    --gin.X="'y'"  # a comment [--split=S]
freelm-train --gin_file=gin/base.gin && python -m freelm_jax.build_glue --out=d
```
See `python -m freelm_jax.plots runs/a
runs/b --output=c.png`; `pre-freelm-train` is no command.
"""
  found = doc_snippets.snippets('x.md', text)
  assert [(c.snippet.where, c.module, c.args)
          for s in found for c in doc_snippets.commands(s)] == [
              ('x.md:2', 'freelm_jax.eval', ('--model_dir=DIR', "--gin.X='y'")),
              ('x.md:4', 'freelm_jax.train', ('--gin_file=gin/base.gin',)),
              ('x.md:4', 'freelm_jax.build_glue', ('--out=d',)),
              ('x.md:6', 'freelm_jax.plots', ('runs/a', 'runs/b', '--output=c.png'))]


def test_the_checker_reports_each_broken_command_with_its_line(checked):
  results, broken = checked
  reported = {}
  for problem in results['problems']:
    if problem.startswith(broken + ':'):
      line = int(problem[len(broken) + 1:].split(':')[0])
      reported.setdefault(line, []).append(problem)
  assert set(reported) == BROKEN_LINES, '\n'.join(sum(reported.values(), []))
  assert 'no module freelm_jax.no_such_tool' in reported[4][0]
  assert 'no flag --no_such_flag' in reported[5][0]
  assert 'no_such_layer.gin: no such file' in reported[6][0]
  assert 'TRAIN_STEPZ' in reported[7][0]
  assert 'no_such' in reported[9][0]
  assert 'no flag --no_such_option' in reported[10][0]
  assert 'GLUE_TRAIN_SPLIT' in reported[11][0]  # on the default run, not on GLUE's
  assert 'no_such_module' in reported[12][0]
  assert reported[13][0].endswith(': no seqio task or mixture no_such_task')
  assert 'no_such_mixture' in reported[14][0]
  assert len(reported[18]) == 2  # both inline flags
  assert 'no_such_parameter' in reported[34][0]  # a gin block


if __name__ == '__main__':
  with tempfile.TemporaryDirectory(prefix='doc_modules_') as directory:
    print(json.dumps(check_docs(sys.argv[1:], directory)))
