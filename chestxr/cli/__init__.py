"""Layer 6: the chestxr command line; one module per subcommand, each thin over chestxr.runs and below."""


def main(argv=None) -> int:
    """Entry point of the ``chestxr`` console script (see chestxr.cli.main)."""
    from chestxr.cli.main import main as _main

    return _main(argv)
