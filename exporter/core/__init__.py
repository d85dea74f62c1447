"""The small core every domain builds on: the clock, the store, the source and provider
bases, the snapshot, the HTTP client and server, and source health."""
