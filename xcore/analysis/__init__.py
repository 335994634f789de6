"""Dataset-level analyses computed from a run's Parquet tables (written by any number of actors)."""
