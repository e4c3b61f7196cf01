"""Collector kind ``backup``: freshness against RPO, integrity and restore tests of backups
(restic, borg, dump files, any tool via a command, and pushes from backup scripts), locally or
over SSH. See docs/backups.md."""

from __future__ import annotations

from collectors.backup.collector import METRICS, REASONS, BackupCollector
from collectors.backup.config import BackupTarget

COLLECTORS = [BackupCollector]

__all__ = ["COLLECTORS", "METRICS", "REASONS", "BackupCollector", "BackupTarget"]
