"""Tests of the small core every domain builds on: store, clock, HTTP client, server, config, daemon."""
