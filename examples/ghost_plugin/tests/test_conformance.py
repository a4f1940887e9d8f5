"""The searchcore conformance kit on the ghost plugin; runs installed or not (``pytest`` in this folder)."""

from __future__ import annotations

from searchcore.testing import PluginConformance


class TestGhostConformance(PluginConformance):
    plugin_module = "searchcore_ghost"
    plugin_name = "ghost"


class TestGhostWithOptions(PluginConformance):
    """The same checks with a space file's overrides: other ratios and a larger cheap kernel."""

    plugin_module = "searchcore_ghost"
    plugin_name = "ghost"
    options = {"ratios": [2, 8], "cheap_kernel": 5}
