"""FreeLM in JAX/Flax: a GPT-2 decoder trained with a language and a teacher signal."""

__all__ = ['Predictor']


def __getattr__(name):
  # Lazy, so that importing e.g. freelm_jax.network stays light.
  if name == 'Predictor':
    from freelm_jax.predictor import Predictor  # pylint: disable=g-import-not-at-top
    return Predictor
  raise AttributeError(f'module {__name__!r} has no attribute {name!r}')
