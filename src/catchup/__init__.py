"""catchup: consistent backups of database shards that cost the source only the log delta."""

__version__ = "0.1.0"
