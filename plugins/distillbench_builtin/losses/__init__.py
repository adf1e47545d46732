"""Built-in losses (declarations only; implementations are imported lazily)."""

COMPONENTS = []
