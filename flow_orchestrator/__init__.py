"""flow-orchestrator: an embeddable workflow engine for Python with a Cython core."""

from __future__ import annotations

import logging as _logging

from . import errors
from ._ext import CSRGraph, Interner
from .errors import *  # noqa: F403

__version__ = "0.1.0"

_logging.getLogger(__name__).addHandler(_logging.NullHandler())
