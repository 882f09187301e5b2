"""soar-async: SOAR (self-improving program synthesis on ARC-AGI) as a message-driven actor system."""

__version__ = "0.1.0"
