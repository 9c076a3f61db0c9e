"""Command-line tools: one module per `python -m testbed <tool>` subcommand (add_parser)."""
