"""forelen: output-length prediction for LLM serving as a living benchmark."""

__version__ = "0.1.0"
