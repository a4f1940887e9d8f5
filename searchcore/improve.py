"""Old import path of the helpers plugins transform specs with, kept for plugins written against it: see ``searchcore.arch.improve``."""

import sys

from searchcore.arch import improve as _module

sys.modules[__name__] = _module
