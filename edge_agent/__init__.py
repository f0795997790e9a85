"""The campus edge agent: configuration, supervisor, rules and the command line over the libraries."""

from importlib.metadata import PackageNotFoundError, version

try:
    __version__ = version("campus-edge-gateway")
except PackageNotFoundError:  # running from a source tree that was never installed
    __version__ = "0.0.0+source"

__all__ = ["__version__"]
