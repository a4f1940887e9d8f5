"""Old import path of the hook specifications, kept for plugins written against it: see ``searchcore.plugins.hookspecs``."""

import sys

from searchcore.plugins import hookspecs as _module

sys.modules[__name__] = _module
