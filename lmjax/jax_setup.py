"""Process-wide JAX settings: the persistent compilation cache (cuts start-up on CPU too)."""

import os

_DONE = False


def cache_dir() -> str:
    """lmjax's cache root ($LMJAX_CACHE, else ~/.cache/lmjax)."""
    return os.environ.get("LMJAX_CACHE", os.path.join(os.path.expanduser("~"), ".cache", "lmjax"))


def setup_jax() -> None:
    """Enable the persistent compilation cache once per process. Safe to call repeatedly."""
    global _DONE
    if _DONE:
        return
    import jax

    path = os.environ.get("LMJAX_JAX_CACHE", os.path.join(cache_dir(), "jax"))
    os.makedirs(path, exist_ok=True)
    jax.config.update("jax_compilation_cache_dir", path)
    jax.config.update("jax_persistent_cache_min_compile_time_secs", 0.0)
    jax.config.update("jax_persistent_cache_min_entry_size_bytes", 0)
    _DONE = True
