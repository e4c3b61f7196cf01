"""The registry of collector kinds lives in :mod:`agent.registry`; re-exported here."""

from agent.registry import MODULES, auth_models, collectors

__all__ = ["MODULES", "auth_models", "collectors"]
