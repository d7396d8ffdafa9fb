"""The `upm` subcommands, one module per group; each registers its parsers."""
