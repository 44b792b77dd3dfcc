"""The durable spool: SQLite files under MLOBS_DIR, written by the flusher, read by sinks."""
