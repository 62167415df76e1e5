"""Project-owned helpers that start real third-party servers for the integration tests and benches."""
