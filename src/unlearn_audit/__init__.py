"""unlearn-audit: does an unlearned language model really forget? A multi-view audit."""

__version__ = "0.1.0"
