"""Old import path of the plugin conformance suite, kept for plugins written against it: see ``searchcore.authoring.testing``."""

import sys

from searchcore.authoring import testing as _module

sys.modules[__name__] = _module
