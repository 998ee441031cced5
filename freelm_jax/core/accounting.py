"""Model FLOPs, a compiled step's memory and a config summary, shared by `plan`
and `bench`.

Imports nothing (not even JAX): `plan` sets its XLA flags before JAX loads.
"""

SUMMARY_FIELDS = ('num_layers', 'd_model', 'num_heads', 'vocab_size', 'max_len', 'dtype',
                  'scan_layers', 'remat_policy', 'attention_impl', 'vocab_pad_multiple')


def model_summary(config) -> dict:
  """The fields of a ModelConfig that size and shape the train steps."""
  return {k: getattr(config, k) for k in SUMMARY_FIELDS}


def memory_bytes(compiled) -> dict[str, int]:
  """Per-device bytes of a compiled step (XLA's memory analysis): argument,
  output, alias, temp, generated_code and peak = arguments + outputs - aliased
  + temporaries."""
  stats = compiled.memory_analysis()
  out = {k: int(getattr(stats, f'{k}_size_in_bytes'))
         for k in ('argument', 'output', 'alias', 'temp', 'generated_code')}
  out['peak'] = out['argument'] + out['output'] - out['alias'] + out['temp']
  return out


def flops_per_token(config, decoder_params: int, objective: str,
                    seq_len: float) -> int:
  """Model FLOPs per token, 6N + 12 L d T (Kaplan et al. 2020; PaLM appendix B).

  N is the decoder's matmul parameters, plus the tied embedding as the output
  projection for the LM step (the teacher step reads only the small head),
  counted at the real vocabulary size (padded rows are not model FLOPs).
  `seq_len` is the mean attention context (a packed row's mean segment length).
  """
  n = decoder_params + (config.vocab_size * config.d_model if objective == 'lm' else 0)
  return int(6 * n + 12 * config.num_layers * config.d_model * seq_len)
