"""A cloud PBX on Twisted."""

__version__ = "0.1.0"
