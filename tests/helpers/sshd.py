"""A real OpenSSH sshd on a free port on 127.0.0.1 for SSH tests: generated host key and user key,
its own sshd_config (no PAM, key auth only), log on stderr captured to a file (LogLevel VERBOSE,
so accepted and refused logins can be counted on the server side)."""

from __future__ import annotations

import os
import pwd
import socket
import subprocess
import time
from dataclasses import dataclass
from pathlib import Path

from tests.helpers.common import free_port, need


def keygen(path: Path, passphrase: str = "") -> Path:
    subprocess.run(
        [need("ssh-keygen"), "-q", "-t", "ed25519", "-N", passphrase, "-C", "test", "-f", str(path)],
        check=True,
        capture_output=True,
        timeout=30,
    )
    return path


@dataclass
class Sshd:
    host: str
    port: int
    dir: Path
    user: str
    host_key: Path
    user_key: Path
    known_hosts: Path
    log_path: Path
    proc: subprocess.Popen[bytes]

    def log(self) -> str:
        return self.log_path.read_text(errors="replace")

    def accepted(self) -> int:
        """Successful logins so far (server side)."""
        return self.log().count("Accepted publickey for")

    def known_hosts_line(self, pub: Path | None = None) -> str:
        key = (pub or self.host_key.with_suffix(".pub")).read_text().split()
        return f"[{self.host}]:{self.port} {key[0]} {key[1]}\n"

    def stop(self) -> None:
        if self.proc.poll() is None:
            self.proc.terminate()
            try:
                self.proc.wait(10)
            except subprocess.TimeoutExpired:
                self.proc.kill()
                self.proc.wait(5)


def _banner(host: str, port: int) -> bool:
    try:
        with socket.create_connection((host, port), timeout=1) as s:
            s.settimeout(2)
            return s.recv(64).startswith(b"SSH-2.0")
    except OSError:
        return False


def start_sshd(base: Path, max_sessions: int = 30) -> Sshd:
    sshd_bin = need("sshd")
    base.mkdir(parents=True, exist_ok=True)
    host_key = keygen(base / "host_ed25519_key")
    user_key = keygen(base / "user_key")
    (base / "authorized_keys").write_text(user_key.with_suffix(".pub").read_text())
    user = pwd.getpwuid(os.getuid()).pw_name
    if os.getuid() == 0:
        Path("/run/sshd").mkdir(mode=0o755, exist_ok=True)
    last_log = ""
    for _attempt in range(5):
        port = free_port()
        conf = base / "sshd_config"
        conf.write_text(
            f"Port {port}\n"
            "ListenAddress 127.0.0.1\n"
            f"HostKey {host_key}\n"
            f"PidFile {base}/sshd.pid\n"
            f"AuthorizedKeysFile {base}/authorized_keys\n"
            "UsePAM no\n"
            "StrictModes no\n"
            "PubkeyAuthentication yes\n"
            "PasswordAuthentication no\n"
            "KbdInteractiveAuthentication no\n"
            "PermitRootLogin prohibit-password\n"
            f"AllowUsers {user}\n"
            "LogLevel VERBOSE\n"
            f"MaxSessions {max_sessions}\n"
            "MaxStartups 100:30:200\n"
            "AllowTcpForwarding no\n"
            "AllowAgentForwarding no\n"
            "X11Forwarding no\n"
            "PrintMotd no\n"
            "Subsystem sftp internal-sftp\n"
        )
        log_path = base / f"sshd-{port}.log"
        log = open(log_path, "wb")
        proc = subprocess.Popen([sshd_bin, "-D", "-e", "-f", str(conf)], stdout=log, stderr=subprocess.STDOUT)
        log.close()
        deadline = time.monotonic() + 15
        while time.monotonic() < deadline and proc.poll() is None:
            if _banner("127.0.0.1", port):
                kh = base / "known_hosts"
                s = Sshd("127.0.0.1", port, base, user, host_key, user_key, kh, log_path, proc)
                kh.write_text(s.known_hosts_line())
                return s
            time.sleep(0.05)
        last_log = log_path.read_text(errors="replace")
        if proc.poll() is None:
            proc.kill()
            proc.wait(5)
    raise AssertionError(f"sshd did not start:\n{last_log}")
