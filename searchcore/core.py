"""Old import path of the built-in core plugin, kept for plugins written against it: see ``searchcore.builtin.core``."""

import sys

from searchcore.builtin import core as _module

sys.modules[__name__] = _module
