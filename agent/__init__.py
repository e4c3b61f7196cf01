"""continuity-agent: business-continuity promises as measurements."""

__version__ = "0.1.0"
