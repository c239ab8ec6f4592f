"""ecot: Embodied Chain-of-Thought robot policies."""

__version__ = "0.1.0"
