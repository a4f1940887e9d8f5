"""The plugins searchcore ships in the package itself (``core``: backbones, datasets,
objectives, samplers), loaded through the same entry-point group as third-party plugins."""
