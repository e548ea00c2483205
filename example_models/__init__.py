"""Example models used by the demo, the tests and the benchmark (built, never committed)."""
