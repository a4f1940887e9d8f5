"""Search-space files shipped with searchcore (installed as ``searchcore_spaces``)."""
