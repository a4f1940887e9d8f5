"""The conformance kit run on every built-in improvement plugin, exactly as a third-party plugin runs it."""

from __future__ import annotations

from searchcore.testing import PluginConformance


class TestKernel(PluginConformance):
    plugin_module = "searchcore_plugins.kernel"
    options = {"dilations": [1, 2]}  # the default has one dilation, so the dilation dimension would not exist


class TestResidual(PluginConformance):
    plugin_module = "searchcore_plugins.residual"


class TestDense(PluginConformance):
    plugin_module = "searchcore_plugins.dense"


class TestAttention(PluginConformance):
    plugin_module = "searchcore_plugins.attention"


class TestPooling(PluginConformance):
    plugin_module = "searchcore_plugins.pooling"


class TestWidthDepth(PluginConformance):
    plugin_module = "searchcore_plugins.widthdepth"


class TestNormAct(PluginConformance):
    plugin_module = "searchcore_plugins.normact"
