"""What the SQL backends share: DSNs, connection pools, opening SQLite files, cursors and
per-event-loop locks. Backends import this package, never each other."""
