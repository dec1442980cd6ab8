"""genscom: LLM-native generative semantic communication toolkit."""

__version__ = "0.1.0"
