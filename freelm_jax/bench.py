r"""Step benchmark: tokens/s, step time, MFU and memory of each train step.

  python -m freelm_jax.bench --gin_file=gin/base.gin [--gin_file=gin/models/freelm_0.3b.gin]
      [--gin.LM_BATCH_SIZE=16 --gin.LM_SEQ_LEN=1024 ...] [--steps=20]

Prints one JSON line per objective of the schedule (OBJECTIVE_SCHEDULE; 'lm'
and 'teacher' for 'parity') and, for a schedule of several objectives, one
named after it for their mix (the steps in the schedule's order, as in
training), with `tokens_per_s`, `step_ms`, `mfu`, `compile_s`, `peak_memory_bytes`, `config`
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
import jax
import numpy as np

from freelm_jax import cli
from freelm_jax.common import errors
from freelm_jax.core import accounting
from freelm_jax.core import packing
from freelm_jax.training import runner

cli.define_flags()
flags.adopt_module_key_flags(cli)  # --help lists them with the tool's own
flags.DEFINE_integer('steps', 10, 'Timed steps per objective (after warm-up).',
                     lower_bound=1)
flags.DEFINE_integer('warmup_steps', 2, 'Untimed steps per objective after compiling.',
                     lower_bound=0)
flags.DEFINE_float('peak_tflops', None, 'Peak dense bf16 TFLOP/s of one device '
                   '(default: looked up from the device kind).')
flags.DEFINE_integer('teacher_pack_len', 0, 'Pack the synthetic teacher propositions '
                     'into rows of this many tokens (0: one proposition per row).',
                     lower_bound=0)
flags.DEFINE_integer('teacher_min_len', 64, 'Shortest packed proposition.', lower_bound=1)
flags.DEFINE_bool('lm_segment_ids', True, 'Give the LM batch segment_ids (packed-row masking).')
flags.DEFINE_list('objectives', None, 'Steps to time (default: the schedule\'s objectives); '
                  'the schedule\'s mix is timed when all of them are.')
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
  n = rows * (row_len // min_len)  # more than fit
  propositions = {
      'tokens': rng.integers(0, vocab_size, (n, max_len), dtype=np.int32),
      'lengths': rng.integers(min_len, max_len + 1, (n,), dtype=np.int32),
      'truth': rng.integers(0, head_labels[0], (n,), dtype=np.int32),
      'task_type': rng.integers(0, head_labels[-1], (n,), dtype=np.int32),
      'weights': np.ones((n,), np.float32)}
  batch, _ = packing.pack(propositions, rows, row_len, max_per_row=row_len // min_len)
  return batch


def real_tokens_and_context(batch: dict, seq_len: int) -> tuple:
  """(tokens the step learns from, their mean attention context length)."""
  if 'cls_index' in batch:  # packed teacher propositions
    segment_ids = np.asarray(batch['segment_ids'])
    tokens = int((segment_ids > 0).sum())
    return tokens, tokens / int((np.asarray(batch['weights']) > 0).sum())
  return int(np.asarray(batch['tokens']).size), seq_len


def time_steps(step, state, batches: list, num_steps: int) -> tuple:
  """Runs `num_steps` steps cycling through `batches`; (state, seconds)."""
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
  return accounting.memory_bytes(compiled)['peak']


def bench() -> list:
  """Compiles and times each step and the schedule's mix; one dict per line."""
  model_config, data, trainer, schedule = runner.trainer_without_data(
      FLAGS.gin_file, FLAGS.gin_bindings, train_steps=1000)
  state = trainer.init_state(0)
  local = synthetic_batches(data, model_config.head_labels, model_config.vocab_size,
                            trainer.data_shard[1], teacher_pack_len=FLAGS.teacher_pack_len,
                            teacher_min_len=FLAGS.teacher_min_len,
                            lm_segment_ids=FLAGS.lm_segment_ids)
  device = jax.devices()[0]
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
  timer = _StepTimer(trainer, model_config, data, local, device, state.params)
  steps, results = {}, []
  for objective in FLAGS.objectives or schedule.objectives:
    if objective not in trainer.objectives:
      raise errors.ConfigError(f'--objectives: unknown objective {objective!r} '
                               f'({", ".join(trainer.objectives)})')
    state, steps[objective], row = timer.time(objective, state)
    results.append(row)
  if len(schedule.objectives) > 1 and set(schedule.objectives) <= set(steps):
    results.append(schedule_result(trainer, state, schedule, steps, local, results,
                                   timer.peak))
  return [dict(r, config=config, device=info) for r in results]


class _StepTimer:
  """Compiles and times one objective's step on its synthetic batch."""

  def __init__(self, trainer, model_config, data, local: dict, device, params):
    self.trainer, self.model_config, self.local, self.device = (
        trainer, model_config, local, device)
    self.seq_lens = {'lm': data.lm_seq_len, 'teacher': data.teacher_seq_len}
    self.peak = peak_flops(device)
    self.decoder_params = int(sum(x.size for x in jax.tree.leaves(params['decoder'])))

  def time(self, objective: str, state) -> tuple:
    """(state after the timed steps, the compiled step, its result row)."""
    stream = self.trainer.objectives[objective].stream
    batch = self.trainer.shard_batch(self.local[stream])
    start = time.perf_counter()
    step = self.trainer.compile_step(objective, state, batch)
    compile_s = time.perf_counter() - start
    state, _ = time_steps(step, state, [batch], FLAGS.warmup_steps)
    state, seconds = time_steps(step, state, [batch], FLAGS.steps)
    tokens, context = real_tokens_and_context(self.local[stream], self.seq_lens[stream])
    tokens *= self.trainer.data_shard[1]
    flops = accounting.flops_per_token(self.model_config, self.decoder_params, objective,
                                       context)
    tokens_per_s = tokens * FLAGS.steps / seconds
    peak = None if self.peak is None else self.peak * jax.device_count()
    return state, step, {
        'objective': objective, 'batch_size': batch['tokens'].shape[0],
        'seq_len': batch['tokens'].shape[1], 'mean_context': round(context, 1),
        'batch_tokens': tokens, 'tokens_per_s': round(tokens_per_s, 1),
        'step_ms': round(1e3 * seconds / FLAGS.steps, 3),
        'model_flops_per_token': flops,
        'mfu': None if peak is None else round(tokens_per_s * flops / peak, 4),
        'compile_s': round(compile_s, 2),
        'peak_memory_bytes': peak_memory_bytes(self.device, step),
    }


def schedule_result(trainer, state, schedule, steps: dict, local: dict, results: list,
                    peak) -> dict:
  """Times the steps in the schedule's order (lm, teacher, lm, ... for
  'parity'), FLAGS.steps per objective; `slowdown` compares with the
  separately timed steps."""
  num_steps = len(schedule.objectives) * FLAGS.steps
  order = [schedule.objective(i) for i in range(num_steps)]
  counts = schedule.counts(num_steps)
  batches = {o: trainer.shard_batch(local[trainer.objectives[o].stream]) for o in counts}
  mixed_step = lambda s, objective: steps[objective](s, batches[objective])
  _, seconds = time_steps(mixed_step, state, order, num_steps)
  by_objective = {r['objective']: r for r in results}
  tokens = sum(by_objective[o]['batch_tokens'] * n for o, n in counts.items())
  flops = sum(by_objective[o]['batch_tokens'] * by_objective[o]['model_flops_per_token'] * n
              for o, n in counts.items())
  separate = sum(by_objective[o]['step_ms'] * n for o, n in counts.items()) * 1e-3
  return {'objective': schedule.name or type(schedule).__name__,
          'tokens_per_s': round(tokens / seconds, 1),
          'step_ms': round(1e3 * seconds / num_steps, 3),
          'slowdown_vs_separate_steps': round(seconds / separate - 1, 4),
          'mfu': None if peak is None else round(flops / seconds / (peak * jax.device_count()), 4)}


def main(argv):
  del argv
  lines = cli.run_or_exit(bench)
  for line in lines:
    print(json.dumps(line), flush=True)


def run():
  """The `freelm-bench` command."""
  app.run(main, argv=cli.rewrite_gin_args(sys.argv))


if __name__ == '__main__':
  run()
