"""Old import path of the architecture spec, kept for plugins written against it: see ``searchcore.arch.spec``."""

import sys

from searchcore.arch import spec as _module

sys.modules[__name__] = _module
