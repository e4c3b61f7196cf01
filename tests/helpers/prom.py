"""A real Prometheus server (Debian package) for tests: own config, storage and free port."""

from __future__ import annotations

import json
import subprocess
import time
import urllib.parse
from pathlib import Path
from typing import Any

import yaml

from tests.helpers.common import free_port, http_get, need, wait_until


class Prometheus:
    def __init__(
        self,
        tmp_path: Path,
        config: dict[str, Any],
        extra_args: list[str] | None = None,
        port: int | None = None,
        name: str = "prometheus",
    ) -> None:
        self.binary = need("prometheus")
        self.dir = tmp_path / name
        self.dir.mkdir(parents=True, exist_ok=True)
        self.config_path = self.dir / "prometheus.yml"
        self.config_path.write_text(yaml.safe_dump(config))
        self.port = port or free_port()
        self.url = f"http://127.0.0.1:{self.port}"
        self.extra_args = extra_args or []
        self.proc: subprocess.Popen[bytes] | None = None
        self.log_path = self.dir / "prometheus.log"

    def start(self, timeout: float = 60.0) -> Prometheus:
        args = [self.binary, f"--config.file={self.config_path}", f"--web.listen-address=127.0.0.1:{self.port}"]
        if not any(a.startswith("--enable-feature=agent") for a in self.extra_args):
            args.append(f"--storage.tsdb.path={self.dir / 'data'}")
        else:
            args.append(f"--storage.agent.path={self.dir / 'agent-data'}")
        self._log = open(self.log_path, "ab")
        self.proc = subprocess.Popen([*args, *self.extra_args], stdout=self._log, stderr=subprocess.STDOUT)

        def ready() -> bool:
            assert self.proc is not None
            if self.proc.poll() is not None:
                raise AssertionError(f"prometheus exited:\n{self.log_path.read_text()[-3000:]}")
            return http_get(self.url + "/-/ready", timeout=1.0)[0] == 200

        wait_until(ready, timeout, what="prometheus ready")
        return self

    def query(self, expr: str, at: float | None = None) -> list[dict[str, Any]]:
        q = {"query": expr}
        if at is not None:
            q["time"] = str(at)
        status, body = http_get(f"{self.url}/api/v1/query?{urllib.parse.urlencode(q)}")
        data = json.loads(body)
        if status != 200 or data.get("status") != "success":
            raise AssertionError(f"query {expr!r} failed: {data.get('error', body[:300])}")
        return list(data["data"]["result"])

    def query_range(self, expr: str, start: float, end: float, step: float) -> list[dict[str, Any]]:
        q = {"query": expr, "start": str(start), "end": str(end), "step": str(step)}
        status, body = http_get(f"{self.url}/api/v1/query_range?{urllib.parse.urlencode(q)}")
        data = json.loads(body)
        if status != 200 or data.get("status") != "success":
            raise AssertionError(f"query_range {expr!r} failed: {data.get('error', body[:300])}")
        return list(data["data"]["result"])

    def targets(self) -> list[dict[str, Any]]:
        _status, body = http_get(self.url + "/api/v1/targets")
        return list(json.loads(body)["data"]["activeTargets"])

    def stop(self) -> None:
        if self.proc is not None and self.proc.poll() is None:
            self.proc.terminate()
            try:
                self.proc.wait(20)
            except subprocess.TimeoutExpired:
                self.proc.kill()
                self.proc.wait(5)
        if getattr(self, "_log", None):
            self._log.close()
        time.sleep(0)


def scrape_config(job: str, targets: list[str], interval: str = "1s", **extra: Any) -> dict[str, Any]:
    return {
        "global": {"scrape_interval": interval, "evaluation_interval": interval},
        "scrape_configs": [{"job_name": job, "static_configs": [{"targets": targets}], **extra}],
    }


def start_prometheus(
    tmp_path: Path,
    scrape_targets: list[str],
    extra_args: list[str] | None = None,
    job: str = "continuity-agent",
    interval: str = "1s",
) -> Prometheus:
    return Prometheus(tmp_path, scrape_config(job, scrape_targets, interval), extra_args).start()
