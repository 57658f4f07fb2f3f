"""What every process starts with: its configuration, its logging and its metrics."""
