"""Command line: one entry point, one module per subcommand, each a thin layer over the library."""
