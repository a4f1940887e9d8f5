"""One small exception family. Every message is a single line a user can act on."""

from __future__ import annotations


class SearchcoreError(Exception):
    """Base of every error searchcore raises on purpose."""

    exit_code = 1


class UsageError(SearchcoreError):
    """Bad input from the user (file, key, argument): the CLI exits 2 with the message, no traceback."""

    exit_code = 2


class SpaceFileError(UsageError):
    """A search-space file is malformed; the message names the file, the key path and what is allowed."""

    def __init__(self, source: str, key: str, problem: str) -> None:
        self.source, self.key, self.problem = source, key, problem
        where = f"{source}: {key}" if key else source
        super().__init__(f"{where}: {problem}")


class SpecError(UsageError):
    """An architecture spec is malformed or names something no loaded plugin provides."""


class PluginError(SearchcoreError):
    """A plugin is broken; the message names the plugin, its package and the problem."""

    def __init__(self, plugin: str, package: str, problem: str) -> None:
        self.plugin, self.package, self.problem = plugin, package, problem
        super().__init__(f"plugin {plugin!r} (package {package}): {problem}")


class TrialFailed(SearchcoreError):
    """A single trial failed; the search records it and goes on."""


class Diverged(SearchcoreError):
    """Training blew up (the loss became NaN or infinite): the trial is scored as failed, not retried as is."""
