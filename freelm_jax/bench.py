r"""Step benchmark: tokens/s, step time, MFU and memory of each train step.

  python -m freelm_jax.bench --gin_file=gin/base.gin [--gin_file=gin/models/freelm_0.3b.gin]
      [--gin.LM_BATCH_SIZE=16 --gin.LM_SEQ_LEN=1024 ...] [--steps=20]

Prints one JSON line per objective ('lm', 'teacher') and one for the
'parity'-mixed run (the two steps alternating, as in training), with
`tokens_per_s`, `step_ms`, `mfu`, `compile_s`, `peak_memory_bytes`, `config`
and `device`. Batches are synthetic (random tokens, full-length rows), so
neither TensorFlow nor seqio is imported: gin's `import tasks` is skipped.

MFU = tokens/s x model FLOPs per token / the device's peak dense bf16 FLOP/s.
Model FLOPs per token = 6 N + 12 L d T (Kaplan et al. 2020; PaLM appendix B),
N = the non-positional matmul parameters the step uses: the decoder plus the
tied embedding as output projection for 'lm'; the teacher step reads only the
small head at [cls], so its N leaves the embedding out. `mfu` is null where
the peak rate is unknown (e.g. CPU) unless --peak_tflops is given.

With --teacher_pack_len=N the teacher batch packs propositions of
--teacher_min_len to TEACHER_SEQ_LEN tokens (uniform lengths) into
TEACHER_BATCH_SIZE rows of N tokens (`packing.py`); its `tokens_per_s` counts
real tokens only, and its attention FLOPs use the mean proposition length.
--nolm_segment_ids drops the LM batch's `segment_ids` (one causal segment per
row, as the peers run: cuDNN then needs no mask).
"""

import json
import os
import sys
import time

from absl import app
from absl import flags

from freelm_jax import accounting
from freelm_jax import gin_utils

gin_utils.define_flags()
flags.DEFINE_integer('steps', 10, 'Timed steps per objective (after warm-up).')
flags.DEFINE_integer('warmup_steps', 2, 'Untimed steps per objective after compiling.')
flags.DEFINE_float('peak_tflops', None, 'Peak dense bf16 TFLOP/s of one device '
                   '(default: looked up from the device kind).')
flags.DEFINE_integer('teacher_pack_len', 0, 'Pack the synthetic teacher propositions '
                     'into rows of this many tokens (0: one proposition per row).')
flags.DEFINE_integer('teacher_min_len', 64, 'Shortest packed proposition.')
flags.DEFINE_bool('lm_segment_ids', True, 'Give the LM batch segment_ids (packed-row masking).')
flags.DEFINE_list('objectives', ['lm', 'teacher'], 'Steps to time; the parity mix is timed '
                  'when both are.')
flags.DEFINE_string('label', '', 'A name for this run, recorded in `config`.')
FLAGS = flags.FLAGS

# Dense bf16 peak FLOP/s of one device, by a substring of `device_kind`
# (vendor data sheets; SXM parts for NVIDIA). First match wins.
PEAK_BF16_FLOPS = (
    ('H200', 989e12), ('H100', 989e12), ('A100', 312e12), ('L4', 121e12),
    ('TPU v6 lite', 918e12), ('TPU v5 lite', 197e12), ('TPU v5', 459e12),
    ('TPU v4', 275e12),
)


def peak_flops(device) -> float | None:
  """Peak dense bf16 FLOP/s of `device` (--peak_tflops wins), or None."""
  if FLAGS.peak_tflops:
    return FLAGS.peak_tflops * 1e12
  for name, flops in PEAK_BF16_FLOPS:
    if name.lower() in device.device_kind.lower():
      return flops
  return None


def synthetic_batches(data, head_labels, vocab_size: int, rows: int, seed: int = 0,
                      teacher_pack_len: int = 0, teacher_min_len: int = 64,
                      lm_segment_ids: bool = True) -> dict:
  """One process-local batch per objective, in input_pipeline's layout
  (the teacher's packed by `packing.pack` when `teacher_pack_len` > 0)."""
  import numpy as np  # pylint: disable=g-import-not-at-top
  rng = np.random.default_rng(seed)
  lm_shape = (data.lm_batch_size // rows, data.lm_seq_len)
  tokens = rng.integers(0, vocab_size, (lm_shape[0], lm_shape[1] + 1), dtype=np.int32)
  teacher_rows = data.teacher_batch_size // rows
  lm = {'tokens': tokens[:, :-1], 'targets': tokens[:, 1:],
        'positions': np.broadcast_to(np.arange(lm_shape[1], dtype=np.int32), lm_shape),
        'segment_ids': np.ones(lm_shape, np.int32),
        'weights': np.ones(lm_shape, np.float32)}
  if not lm_segment_ids:
    del lm['segment_ids']
  if teacher_pack_len:
    return {'lm': lm, 'teacher': _packed_teacher(
        rng, head_labels, vocab_size, teacher_rows, teacher_pack_len,
        min(teacher_min_len, data.teacher_seq_len), data.teacher_seq_len)}
  return {
      'lm': lm,
      'teacher': {
          'tokens': rng.integers(0, vocab_size, (teacher_rows, data.teacher_seq_len),
                                 dtype=np.int32),
          'lengths': np.full((teacher_rows,), data.teacher_seq_len, np.int32),
          'truth': rng.integers(0, head_labels[0], (teacher_rows,), dtype=np.int32),
          'task_type': rng.integers(0, head_labels[-1], (teacher_rows,), dtype=np.int32),
          'weights': np.ones((teacher_rows,), np.float32)},
  }


def _packed_teacher(rng, head_labels, vocab_size: int, rows: int, row_len: int,
                    min_len: int, max_len: int) -> dict:
  """Propositions of uniform random lengths packed into full rows."""
  import numpy as np  # pylint: disable=g-import-not-at-top
  from freelm_jax import packing  # pylint: disable=g-import-not-at-top
  n = rows * (row_len // min_len)  # more than fit
  propositions = {
      'tokens': rng.integers(0, vocab_size, (n, max_len), dtype=np.int32),
      'lengths': rng.integers(min_len, max_len + 1, (n,), dtype=np.int32),
      'truth': rng.integers(0, head_labels[0], (n,), dtype=np.int32),
      'task_type': rng.integers(0, head_labels[-1], (n,), dtype=np.int32),
      'weights': np.ones((n,), np.float32)}
  batch, _ = packing.pack(propositions, rows, row_len, max_per_row=row_len // min_len)
  return batch


def real_tokens_and_context(objective: str, batch: dict, seq_len: int) -> tuple:
  """(tokens the step learns from, their mean attention context length)."""
  import numpy as np  # pylint: disable=g-import-not-at-top
  if objective == 'teacher' and 'cls_index' in batch:
    segment_ids = np.asarray(batch['segment_ids'])
    tokens = int((segment_ids > 0).sum())
    return tokens, tokens / int((np.asarray(batch['weights']) > 0).sum())
  return int(np.asarray(batch['tokens']).size), seq_len


def time_steps(step, state, batches: list, num_steps: int) -> tuple:
  """Runs `num_steps` steps cycling through `batches`; (state, seconds)."""
  import jax  # pylint: disable=g-import-not-at-top
  start = time.perf_counter()
  for i in range(num_steps):
    state, _ = step(state, batches[i % len(batches)])
  jax.block_until_ready(state)
  return state, time.perf_counter() - start


def peak_memory_bytes(device, compiled) -> int:
  """Peak bytes in use on the device, or the compiled step's buffer estimate."""
  stats = device.memory_stats() or {}
  if 'peak_bytes_in_use' in stats:
    return int(stats['peak_bytes_in_use'])
  analysis = compiled.memory_analysis()
  return int(analysis.argument_size_in_bytes + analysis.output_size_in_bytes
             - analysis.alias_size_in_bytes + analysis.temp_size_in_bytes)


def bench() -> list:
  """Compiles and times both steps and their parity mix; one dict per line."""
  # pylint: disable=g-import-not-at-top
  import jax
  import numpy as np
  from freelm_jax import train_lib
  model_config, data, trainer = train_lib.trainer_without_data(
      FLAGS.gin_file, FLAGS.gin_bindings, train_steps=1000)
  state = trainer.init_state(0)
  decoder_params = int(sum(np.prod(x.shape) for x in jax.tree.leaves(state.params['decoder'])))
  local = synthetic_batches(data, model_config.head_labels, model_config.vocab_size,
                            trainer.data_shard[1], teacher_pack_len=FLAGS.teacher_pack_len,
                            teacher_min_len=FLAGS.teacher_min_len,
                            lm_segment_ids=FLAGS.lm_segment_ids)
  device = jax.devices()[0]
  peak = peak_flops(device)
  config = {'label': FLAGS.label, 'gin_files': FLAGS.gin_file,
            'gin_bindings': FLAGS.gin_bindings,
            'model': accounting.model_summary(model_config),
            'logits_chunk': trainer.objectives['lm'].logits_chunk,
            'teacher_pack_len': FLAGS.teacher_pack_len,
            'lm_segment_ids': FLAGS.lm_segment_ids,
            'xla_flags': os.environ.get('XLA_FLAGS', ''),
            'mesh': dict(trainer.mesh.shape)}
  info = {'kind': device.device_kind, 'platform': device.platform,
          'count': jax.device_count(), 'jax': jax.__version__}
  steps, results = {}, []
  lengths = {'lm': data.lm_seq_len, 'teacher': data.teacher_seq_len}
  for objective in FLAGS.objectives:
    if objective not in lengths:
      raise ValueError(f'--objectives: unknown objective {objective!r} (lm, teacher)')
    seq_len = lengths[objective]
    batch = trainer.shard_batch(local[objective])
    start = time.perf_counter()
    steps[objective] = trainer.compile_step(objective, state, batch)
    compile_s = time.perf_counter() - start
    state, _ = time_steps(steps[objective], state, [batch], FLAGS.warmup_steps)
    state, seconds = time_steps(steps[objective], state, [batch], FLAGS.steps)
    tokens, context = real_tokens_and_context(objective, local[objective], seq_len)
    tokens *= trainer.data_shard[1]
    flops = accounting.flops_per_token(model_config, decoder_params, objective, context)
    tokens_per_s = tokens * FLAGS.steps / seconds
    results.append({
        'objective': objective, 'batch_size': batch['tokens'].shape[0],
        'seq_len': batch['tokens'].shape[1], 'mean_context': round(context, 1),
        'batch_tokens': tokens, 'tokens_per_s': round(tokens_per_s, 1),
        'step_ms': round(1e3 * seconds / FLAGS.steps, 3),
        'model_flops_per_token': flops,
        'mfu': None if peak is None else round(tokens_per_s * flops / (peak * jax.device_count()), 4),
        'compile_s': round(compile_s, 2),
        'peak_memory_bytes': peak_memory_bytes(device, steps[objective]),
    })
  if set(steps) == {'lm', 'teacher'}:
    results.append(parity_result(trainer, state, steps, local, results, peak))
  return [dict(r, config=config, device=info) for r in results]


def parity_result(trainer, state, steps: dict, local: dict, results: list,
                  peak) -> dict:
  """Times the two steps alternating (lm, teacher, lm, ...) as a 'parity' run
  does; `slowdown` compares with the separately timed steps' mean."""
  import jax  # pylint: disable=g-import-not-at-top
  batches = {k: trainer.shard_batch(v) for k, v in local.items()}
  parity_step = lambda s, objective: steps[objective](s, batches[objective])
  _, seconds = time_steps(parity_step, state, ['lm', 'teacher'], 2 * FLAGS.steps)
  tokens = sum(r['batch_tokens'] for r in results) * FLAGS.steps
  flops = sum(r['batch_tokens'] * r['model_flops_per_token'] for r in results) * FLAGS.steps
  separate = FLAGS.steps * sum(r['step_ms'] for r in results) * 1e-3
  return {'objective': 'parity', 'tokens_per_s': round(tokens / seconds, 1),
          'step_ms': round(1e3 * seconds / (2 * FLAGS.steps), 3),
          'slowdown_vs_separate_steps': round(seconds / separate - 1, 4),
          'mfu': None if peak is None else round(flops / seconds / (peak * jax.device_count()), 4)}


def main(argv):
  del argv
  try:
    lines = bench()
  except (ValueError, OSError) as e:  # ConfigError is a ValueError
    sys.exit(f'error: {e}')
  for line in lines:
    print(json.dumps(line), flush=True)


if __name__ == '__main__':
  app.run(main, argv=gin_utils.rewrite_gin_args(sys.argv))
