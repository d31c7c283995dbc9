"""asana-export-bot: watch Asana organization exports from Slack."""

from importlib.metadata import PackageNotFoundError, version

try:
    __version__ = version("asana-export-bot")
except PackageNotFoundError:  # running from a source tree that was never installed
    __version__ = "0.0.0"
