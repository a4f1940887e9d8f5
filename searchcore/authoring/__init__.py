"""Tools for plugin authors: the conformance suite, the plugin scaffold, hook docs."""
