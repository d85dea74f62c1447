"""Tests of the probe domain: synthetic checks, their store, uptime and latency."""
