"""asana-export-bot: watch Asana organization exports from Slack."""

#: The one place the version is written (pyproject.toml reads it from here): reading it back
#: from the installed metadata imported importlib.metadata, 22 ms of every start-up.
__version__ = "0.1.0"
