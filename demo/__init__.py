"""The `make demo` driver (not part of the distribution)."""
