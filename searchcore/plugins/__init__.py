"""The plugin contract and its host: the hook specifications third-party plugins implement,
and the host that loads them from the entry-point group and calls them."""
