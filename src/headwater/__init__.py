"""Headwater: keeps the context of generative-AI applications fresh."""

__version__ = "0.1.0"
