"""Old import path of the plugin host, kept for plugins written against it: see ``searchcore.plugins.host``."""

import sys

from searchcore.plugins import host as _module

sys.modules[__name__] = _module
