"""Built-in kernels (declarations only; implementations are imported lazily)."""

COMPONENTS = []
