"""Test app whose tasks module defines no registry: autodiscovery skips it."""
