"""Built-in evaluators (declarations only; implementations are imported lazily)."""

COMPONENTS = []
