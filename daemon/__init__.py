"""Darkroom: a daemon that runs image models on a stream of files.

Importing this package is cheap: torch, diffusers and boto3 are imported only by the
worker process and the backends that need them.
"""

__version__ = "0.1.0"
