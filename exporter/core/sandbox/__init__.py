"""The simulated-platform framework every domain's fake upstreams build on: a loopback server
of mounted apps, the scenario they share, and helpers for faithful fake APIs."""
