"""Test app: a model and a tasks registry whose task writes to it."""
