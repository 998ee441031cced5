"""FreeLM in JAX/Flax: a GPT-2 decoder trained with a language and a teacher signal."""

from freelm_jax.common import console

# TensorFlow's and XLA's C++ logging off by default (set before either loads,
# inherited by input workers); a value the user set is kept.
console.quiet_environment()

__all__ = ['Predictor']

# Modules of the flat layout before the subpackages -> where they are now.
_MOVED = {
    'errors': 'common.errors', 'storage': 'common.storage', 'resources': 'common.resources',
    'jsonl': 'common.jsonl', 'console': 'common.console', 'network': 'core.network',
    'models': 'core.objectives', 'schedules': 'core.schedules', 'trainer': 'core.trainer',
    'partitioning': 'core.partitioning', 'param_layout': 'core.param_layout',
    'param_fitting': 'core.param_fitting', 'accounting': 'core.accounting',
    'packing': 'core.packing', 'checkpoints': 'core.checkpoints',
    'operative_config': 'interop.operative_config', 'hf_format': 'interop.hf_format',
    'interop': 'interop.weights', 'tokenizer': 'inference.tokenizer',
    'predictor': 'inference.predictor', 'gin_utils': 'config.gin_utils',
    'input_pipeline': 'data.input_pipeline', 'prefetch': 'data.prefetch',
    'bench_input': 'data.bench_input', 'loop': 'training.loop',
    'run_tasks': 'training.run_tasks', 'input_streams': 'training.input_streams',
    'evaluation': 'training.evaluation', 'metrics': 'training.metrics',
    'baselines': 'training.baselines',
}


def __getattr__(name):
  if name == 'Predictor':
    # lazy, so that importing e.g. freelm_jax.core.network stays light
    from freelm_jax.inference.predictor import Predictor  # pylint: disable=g-import-not-at-top
    return Predictor
  if name in _MOVED:  # `from freelm_jax import models` in code written for the flat layout
    raise ImportError(f'freelm_jax.{name} is now freelm_jax.{_MOVED[name]}')
  raise AttributeError(f'module {__name__!r} has no attribute {name!r}')
