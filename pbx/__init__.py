"""A cloud PBX on Twisted."""
