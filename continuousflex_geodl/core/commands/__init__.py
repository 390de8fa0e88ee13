"""Subcommands of ``continuousflex-geodl`` (one module each; see ``core.cli``)."""
