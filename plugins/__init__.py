"""searchcore's built-in improvement plugins, installed as ``searchcore_plugins``.

Each module is one plugin (``torchvision_base`` is a package: the plugin and its ``edits``),
registered through the ``searchcore`` entry-point group in pyproject.toml exactly as a
third-party plugin would be. Shared helpers live in
``searchcore.arch.improve`` so that no plugin imports another.
"""
