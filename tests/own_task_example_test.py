"""The own-task example of docs/training.md runs as written: its module, its
train command (the smallest model, two steps) and its eval command, on a few
rows written for each task it registers. Everything is read from the doc."""

import ast
import json
import os
import string
import subprocess
import sys

from cli_test import TINY
import doc_snippets

DOC = 'docs/training.md'
SECTION = 'Your own teacher task'


def _example():
  """The section's modules (name -> code) and its fenced commands."""
  lines = doc_snippets.section_lines(DOC, SECTION)
  found = [s for s in doc_snippets.snippets(DOC) if s.line in lines]
  commands = [c for s in found if s.lang is not None for c in doc_snippets.commands(s)]
  return doc_snippets.module_files(found), commands


def _registrations(code: str) -> list[dict]:
  """The literal arguments of each `tasks.register(...)` call in `code`."""
  positional = ('name', 'source', 'instance', 'propositions', 'label_field', 'task_type')
  out = []
  for node in ast.walk(ast.parse(code)):
    if (isinstance(node, ast.Call) and isinstance(node.func, ast.Attribute)
        and node.func.attr == 'register'):
      arguments = dict(zip(positional, map(ast.literal_eval, node.args)))
      arguments |= {k.arg: ast.literal_eval(k.value) for k in node.keywords
                    if k.arg in positional}
      out.append(arguments)
  return out


def _write_examples(task: dict, root, rows: int = 6) -> None:
  """A few JSONL rows for every split of `task`: each template field filled,
  labels in turn."""
  propositions = task['propositions']
  labels = list(propositions) if isinstance(propositions, dict) else list(range(len(propositions)))
  templates = [task['instance']]
  for value in (propositions.values() if isinstance(propositions, dict) else propositions):
    templates += [value] if isinstance(value, str) else list(value)
  fields = {f for t in templates for _, f, _, _ in string.Formatter().parse(t) if f}
  for split, path in task['source'].items():
    # Relative paths are read from the working directory: the test's tmp_path.
    assert not os.path.isabs(path), f'{DOC}: give the example relative data paths: {path}'
    (root / path).parent.mkdir(parents=True, exist_ok=True)
    (root / path).write_text(''.join(
        json.dumps({**{f: f'{f} of {split} example {i}' for f in fields},
                    task.get('label_field', 'label'): labels[i % len(labels)]}) + '\n'
        for i in range(rows)))


def _flag(command, name):
  return next(a.split('=', 1)[1] for a in command.args if a.startswith(f'--{name}='))


def test_the_own_task_example_trains_and_evaluates_as_written(tmp_path):
  modules, commands = _example()
  registered = [t for code in modules.values() for t in _registrations(code)]
  assert modules and registered, f'{DOC}: no module registering tasks in "{SECTION}"'
  for name, code in modules.items():
    (tmp_path / f'{name}.py').write_text(code)
  for task in registered:
    _write_examples(task, tmp_path)
  [train] = [c for c in commands if c.module == 'freelm_jax.train']
  model_dir = _flag(train, 'model_dir')
  evals = [c for c in commands if c.module == 'freelm_jax.eval'
           and _flag(c, 'model_dir') == model_dir]
  assert evals, f'{DOC}: no eval command for --model_dir={model_dir}'
  path = [doc_snippets.REPO, os.environ.get('PYTHONPATH', '')]
  env = dict(os.environ, PYTHONPATH=os.pathsep.join(p for p in path if p))

  def run(command, *extra):
    result = subprocess.run([sys.executable, '-m', command.module, *command.args, *extra],
                            cwd=tmp_path, env=env, capture_output=True, text=True, timeout=600)
    assert result.returncode == 0, f'{command.text}\n{result.stderr[-3000:]}'
    return result.stdout

  # The held-out LM loss is not this example's: no LM evaluation pipeline.
  outputs = [run(train, *TINY, '--gin.LM_EVAL_BATCHES=0')] + [run(c) for c in evals]
  names = [t['name'] for t in registered]
  for output in outputs:
    assert all(name in output for name in names), output
  with open(tmp_path / model_dir / 'metrics.jsonl') as f:
    rows = [json.loads(line) for line in f]
  assert {'lm', 'teacher'} <= {r.get('objective') for r in rows if r['kind'] == 'train'}
  scored = [r for r in rows if r['kind'] == 'eval' and r.get('task') in names]
  assert {r['task'] for r in scored} == set(names)  # by train, then by eval
  assert len(scored) == len(names) * (1 + len(evals))
  assert all(r['num_examples'] > 0 for r in scored)
