"""Small, tested shims for third-party libraries (see docs/architecture.md)."""
