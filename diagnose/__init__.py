"""registry-diagnose: why this machine cannot pull from or push to a container registry."""

__version__ = "0.1.0"
