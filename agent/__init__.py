"""atari-agent: deep Q-learning for Atari with a Cython emulator bridge."""

__version__ = "0.1.0"
