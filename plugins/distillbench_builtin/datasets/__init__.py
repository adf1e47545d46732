"""Built-in datasets (declarations only; implementations are imported lazily)."""

COMPONENTS = []
