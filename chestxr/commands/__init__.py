"""One module per ``chestxr`` subcommand; each exposes ``add_parser(subparsers)``."""
