"""Human-facing output: the rich console reporter and component listings."""
