"""The top of UPM: the `upm` command line and the composition root (registry, supervisor, demo). Nothing imports it."""
