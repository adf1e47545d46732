"""Component kinds and their contracts, one kind per module.

``spec`` holds the JAX-free declaration every component makes (``Component``); the other
modules hold the runtime contract of each kind (what it receives, what it returns).
"""

from distillbench.components.spec import KINDS, Component

__all__ = ["KINDS", "Component"]
