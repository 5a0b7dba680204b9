"""Files in, pictures out: loading graph files with line numbers, the built-in library,
validation, rendering, the JSON Schema of graph files, and scaffolds."""
