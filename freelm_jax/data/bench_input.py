r"""Input throughput of the GPT-2 BPE path: LM tokens/s and propositions/s per core.

  python -m freelm_jax.data.bench_input [--vocab_dir=DIR] [--glue_dir=~/.cache/freelm_jax/glue]
      [--seconds=20] [--lm_seq_len=1024] [--teacher_seq_len=256]

Prints one JSON object. The LM stream is the real pipeline
(`input_pipeline.lm_dataset`: read, tokenize, split, pack, pad/weights) over
documents of about 2,000 characters (the embedded default's texts joined; web
documents are of that order); the teacher stream is `teacher_dataset` over
the local GLUE files (every task's validation split, mixed with equal rates,
sampled by `sources.sample_from_datasets` as the GLUE mixtures are). Per core: the
wall-clock rate divided by the host cores this process may use, and the rate
per CPU second this process used (equal on an idle machine; the latter is
not skewed by other processes competing for the cores).

The vocabulary is GPT-2's own, shipped in tasks/data/gpt2 (`--vocab_dir`
takes another directory with vocab.json + merges.txt); the JSON says which.
"""

import argparse
import gzip
import json
import os
import random
import tempfile
import time

import seqio

import tasks  # pylint: disable=unused-import  (hides GPUs from TensorFlow)
from freelm_jax.data import input_pipeline
from tasks import glue
from tasks import language
from tasks import sources
from tasks import vocabulary as vocabulary_lib


def _documents(out_path: str, chars: int = 2000, passes: int = 6) -> int:
  """Writes the embedded default's text joined into ~`chars`-character documents; returns the count.

  `passes` reshuffled copies make more than seqio's in-memory caching limit
  (10k examples), so the source is read from disk as a real corpus would be.
  """
  with gzip.open(os.path.join(vocabulary_lib.DEMO_DIR, 'lm.train.jsonl.gz'), 'rt') as f:
    texts = [json.loads(line)['text'] for line in f]
  count, doc = 0, []
  with open(out_path, 'w') as out:
    for seed in range(passes):
      random.Random(seed).shuffle(texts)
      for text in texts:
        doc.append(text)
        if sum(map(len, doc)) >= chars:
          out.write(json.dumps({'text': ' '.join(doc)}) + '\n')
          count, doc = count + 1, []
  return count


def _rate(dataset, seconds: float, count) -> dict:
  """Items of `count(element)` per wall second and per CPU second of this
  process (all its threads), over `seconds` after a warm-up element."""
  iterator = dataset.as_numpy_iterator()
  next(iterator)
  total, start, cpu_start = 0, time.perf_counter(), time.process_time()
  while time.perf_counter() - start < seconds:
    total += count(next(iterator))
  wall, cpu = time.perf_counter() - start, time.process_time() - cpu_start
  return {'measured': total, 'wall_s': round(wall, 2), 'cpu_s': round(cpu, 2),
          'per_s': round(total / wall), 'per_cpu_s': round(total / cpu)}


def main() -> None:
  parser = argparse.ArgumentParser(description=__doc__.split('\n')[0])
  parser.add_argument('--vocab_dir', default=None)
  parser.add_argument('--glue_dir', default=glue.DEFAULT_GLUE_DIR)  # tasks/build_glue.py
  parser.add_argument('--seconds', type=float, default=20.0)
  parser.add_argument('--lm_seq_len', type=int, default=1024)
  parser.add_argument('--teacher_seq_len', type=int, default=256)
  args = parser.parse_args()
  cores = len(os.sched_getaffinity(0))
  work = tempfile.mkdtemp(prefix='bench_input_')
  corpus = os.path.join(work, 'lm.train.jsonl')
  documents = _documents(corpus)
  vocab_dir = args.vocab_dir or vocabulary_lib.GPT2_DIR
  vocab = vocabulary_lib.gpt2_vocabulary(vocab_dir)

  lm = language.stream({'train': corpus}, name='bench_lm', vocab_dir=vocab_dir)
  lm_ds = input_pipeline.lm_dataset(lm, args.lm_seq_len, 'train', seed=0, num_epochs=None)
  lm_ds = lm_ds.batch(64).prefetch(4)
  lm = _rate(lm_ds, args.seconds, lambda b: int(b['weights'].sum()))

  result = {
      'vocabulary': f'{vocab_dir} ({vocab.vocab_size} ids)' if args.vocab_dir else
                    f'GPT-2 (shipped in tasks/data/gpt2, {vocab.vocab_size} ids)',
      'host_cores': cores, 'load_average_1min': os.getloadavg()[0],
      'lm_documents': documents, 'lm_seq_len': args.lm_seq_len,
      'lm_tokens': lm,
      # Per core: wall-clock rate / usable cores, and tokens per CPU second
      # actually used (the same on an idle machine; robust to other load).
      'lm_tokens_per_s_per_core': round(lm['per_s'] / cores),
      'lm_tokens_per_cpu_s': lm['per_cpu_s'],
  }
  if os.path.isdir(os.path.expanduser(args.glue_dir)):
    names = glue.register_local(args.glue_dir, vocab_dir=vocab_dir, prefix='bench_glue_')
    seqio.MixtureRegistry.add('bench_glue', names['validation'], default_rate=1.0,
                              sample_fn=sources.sample_from_datasets)
    teacher = input_pipeline.teacher_dataset(
        'bench_glue', args.teacher_seq_len, 'validation', shuffle=True, seed=0,
        num_epochs=None, batch_size=256).prefetch(4)
    rate = _rate(teacher, args.seconds, lambda b: len(b['tokens']))
    result.update({
        'teacher_tasks': names['validation'], 'teacher_seq_len': args.teacher_seq_len,
        'propositions': rate,
        'propositions_per_s_per_core': round(rate['per_s'] / cores),
        'propositions_per_cpu_s': rate['per_cpu_s']})
  else:
    result['teacher'] = f'skipped: no GLUE dir {args.glue_dir!r}'
  print(json.dumps(result, indent=1))
  os._exit(0)  # skip TensorFlow's destructors of in-flight iterators.


if __name__ == '__main__':
  main()
