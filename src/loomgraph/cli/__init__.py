"""The `loomgraph` command line."""
