"""The package's version: the one place it is written (layer L0, foundations).

``pyproject.toml`` reads it at build time (``[tool.setuptools.dynamic]``), and
``flow_orchestrator.__version__`` re-exports it.
"""

__version__ = "0.1.0"
