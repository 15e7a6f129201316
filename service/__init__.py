"""gradpilot's control plane: settings, database, REST API, controller, executors, agent graph.

The architecture is described in ``docs/architecture.md``.
"""

from importlib.metadata import PackageNotFoundError, version

try:
    __version__ = version("gradpilot")
except PackageNotFoundError:  # running from a source tree that was never installed
    __version__ = "0.0.0+unknown"
