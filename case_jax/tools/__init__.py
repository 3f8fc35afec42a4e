"""Command-line tools (python -m case_jax.tools.<name>)."""
