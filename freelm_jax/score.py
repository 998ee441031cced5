r"""Zero-shot classification of a JSONL file of propositions.

  python -m freelm_jax.score --model=PATH --input=propositions.jsonl \
      [--output=predictions.jsonl] [--step=N] [--vocab_dir=DIR] [--batch_size=64]

Each input line is `{"instance": "...", "propositions": {"label": "proposition
text", ...}}` (a list of propositions is labelled 0, 1, ...); other fields are
copied to the output. Each output line adds `prediction` (the label whose
proposition is most probably true) and `probabilities` (label -> P(true)).
`--model` is anything `Predictor.from_pretrained` loads. A bad line stops the
run with one `error: file:line: ...` line before anything is written.
"""

import json
import os
import sys

from absl import app
from absl import flags
import tqdm

from freelm_jax import cli
from freelm_jax.common import errors
from freelm_jax.common import jsonl
from freelm_jax.inference import predictor as predictor_lib

flags.DEFINE_string('model', None, 'A model_dir, HF GPT-2 or FreeLM directory.',
                    required=True)
flags.DEFINE_string('input', None, 'JSONL of {"instance", "propositions"}.', required=True)
flags.DEFINE_string('output', None, 'Predictions JSONL (default: stdout).')
flags.DEFINE_integer('step', None, 'Checkpoint step of a model_dir (default: newest).')
flags.DEFINE_string('vocab_dir', None, 'Tokenizer files (default: the model\'s).')
flags.DEFINE_integer('batch_size', 64, 'Propositions per forward pass.')
FLAGS = flags.FLAGS


def read_examples(path: str) -> list[dict]:
  """The input rows (`.gz` too); a malformed one raises DataError naming file:line."""
  rows = []
  for where, row in jsonl.read([path]):
    _check_row(row, where)
    rows.append(row)
  return rows


def _check_row(row: dict, where: str) -> None:
  if not isinstance(row.get('instance'), str):
    raise errors.DataError(f'{where}: "instance" must be a string.')
  propositions = row.get('propositions')
  if isinstance(propositions, list):
    texts = propositions
  elif isinstance(propositions, dict):
    texts = list(propositions.values())
  else:
    raise errors.DataError(
        f'{where}: "propositions" must be an object (label -> text) or a list.')
  if not texts or not all(isinstance(t, str) for t in texts):
    raise errors.DataError(
        f'{where}: "propositions" must hold at least one string, and only strings.')


def score(predictor, rows: list[dict], batch_size: int) -> list[dict]:
  """Output rows: each input row plus `prediction` and `probabilities`."""
  out = []
  chunk = max(1, batch_size // 2)
  with tqdm.tqdm(total=len(rows), unit='example', file=sys.stderr) as progress:
    for start in range(0, len(rows), chunk):
      part = rows[start:start + chunk]
      results = predictor.classify_many([(r['instance'], r['propositions']) for r in part])
      for row, (label, probabilities) in zip(part, results):
        out.append(dict(row, prediction=label, probabilities=probabilities))
      progress.update(len(part))
  return out


def write_rows(rows: list[dict], path) -> None:
  """Writes JSONL to `path` atomically (via a temporary file), or stdout."""
  text = ''.join(json.dumps(r, ensure_ascii=False) + '\n' for r in rows)
  if not path:
    sys.stdout.write(text)
    return
  temporary = path + '.tmp'
  with open(temporary, 'w', encoding='utf-8') as f:
    f.write(text)
  os.replace(temporary, path)


def main(argv):
  del argv
  cli.quiet_library_logs()
  with errors.exit_on(ValueError, OSError):  # CheckpointError is a ValueError
    rows = read_examples(FLAGS.input)
    predictor = predictor_lib.Predictor.from_pretrained(
        FLAGS.model, step=FLAGS.step, vocab_dir=FLAGS.vocab_dir,
        batch_size=FLAGS.batch_size)
    write_rows(score(predictor, rows, FLAGS.batch_size), FLAGS.output)


def run():
  """The `freelm-score` command."""
  app.run(main)


if __name__ == '__main__':
  run()
