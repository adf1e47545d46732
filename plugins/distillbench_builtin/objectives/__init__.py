"""Built-in objectives (declarations only; implementations are imported lazily)."""

COMPONENTS = []
