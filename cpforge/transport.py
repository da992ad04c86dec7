"""How cpforge reaches a Docker engine by URL: unix://, tcp:// with TLS client certificates, ssh://.

    unix:///path/docker.sock     a local socket
    tcp://host:port              TLS with client certificates, found (never printed) in this order:
                                   1. the Docker context whose endpoint is this URL
                                      ($DOCKER_CONFIG or ~/.docker: contexts/meta, contexts/tls);
                                   2. $DOCKER_CERT_PATH (ca.pem, cert.pem, key.pem);
                                   3. ~/.docker/{ca,cert,key}.pem (the docker CLI's own default).
                                 Without certificates only a loopback host is reached (plain HTTP).
    ssh://[user@]host[:port]     the docker SDK's ssh transport (paramiko): the remote user runs
                                 `docker system dial-stdio`. Keys come from ssh-agent or ~/.ssh/id_*,
                                 user, port, IdentityFile and ProxyCommand from ~/.ssh/config; the
                                 host key must already be in ~/.ssh/known_hosts (unknown hosts are
                                 refused, never trusted on first use).

URLs carry no secret (a password in a URL is refused), so they are safe to print and to record in
the build report, which names the engine that built each entry.
"""

from __future__ import annotations

import hashlib
import ipaddress
import json
import os
from collections.abc import Mapping
from dataclasses import dataclass
from pathlib import Path
from urllib.parse import urlsplit

import docker
import docker.tls
from docker.constants import MINIMUM_DOCKER_API_VERSION

from .errors import EngineError
from .matrix import ENGINE_URL_RE

DEFAULT_URL = "unix:///var/run/docker.sock"
URL_HINT = "unix:///var/run/docker.sock, tcp://HOST:2376 (TLS) or ssh://USER@HOST[:PORT]"


@dataclass(frozen=True, kw_only=True)
class TLSFiles:
    """Client certificate, key and CA of a tcp:// engine, and where they were found."""

    cert: Path
    key: Path
    ca: Path | None
    verify: bool
    origin: str  # for messages: "docker context `arm1`", "$DOCKER_CERT_PATH", "~/.docker"

    def config(self) -> docker.tls.TLSConfig:
        return docker.tls.TLSConfig(
            client_cert=(str(self.cert), str(self.key)),
            ca_cert=str(self.ca) if self.ca else None,
            verify=self.verify and self.ca is not None,
        )


def default_url(env: Mapping[str, str] | None = None) -> str:
    """The engine cpforge uses when none is named: DOCKER_HOST, else the local socket."""
    env = os.environ if env is None else env
    return env.get("DOCKER_HOST") or DEFAULT_URL


def url_problem(url: str) -> str | None:
    """Why ``url`` is not an engine URL cpforge can use, or None."""
    if urlsplit(url).password is not None:
        return "a password in an engine URL would be printed and recorded; use keys or certificates instead"
    if not ENGINE_URL_RE.match(url):
        return f"not an engine URL (use {URL_HINT})"
    return None


def docker_config_dir(env: Mapping[str, str], home: Path) -> Path:
    return Path(env["DOCKER_CONFIG"]) if env.get("DOCKER_CONFIG") else home / ".docker"


def _pem_dir(path: Path, origin: str, verify: bool = True) -> TLSFiles | None:
    cert, key, ca = path / "cert.pem", path / "key.pem", path / "ca.pem"
    if not (cert.is_file() and key.is_file()):
        return None
    return TLSFiles(cert=cert, key=key, ca=ca if ca.is_file() else None, verify=verify, origin=origin)


def _from_context(url: str, config: Path) -> TLSFiles | None:
    """The TLS files of the Docker context whose docker endpoint is ``url``."""
    meta_root = config / "contexts" / "meta"
    if not meta_root.is_dir():
        return None
    for meta in sorted(meta_root.glob("*/meta.json")):
        try:
            data = json.loads(meta.read_text(encoding="utf-8"))
            endpoint = data["Endpoints"]["docker"]
            name = str(data["Name"])
        except (OSError, ValueError, KeyError, TypeError):
            continue
        if str(endpoint.get("Host", "")).rstrip("/") != url.rstrip("/"):
            continue
        digest = hashlib.sha256(name.encode()).hexdigest()
        tls_dir = config / "contexts" / "tls" / digest / "docker"
        return _pem_dir(tls_dir, f"docker context `{name}`", verify=not endpoint.get("SkipTLSVerify", False))
    return None


def tls_for(url: str, env: Mapping[str, str] | None = None, home: Path | None = None) -> TLSFiles | None:
    """The TLS client files for a tcp:// ``url`` (see the module docstring for the order), or None."""
    env = os.environ if env is None else env
    home = Path.home() if home is None else home
    config = docker_config_dir(env, home)
    found = _from_context(url, config)
    if found is None and env.get("DOCKER_CERT_PATH"):
        found = _pem_dir(Path(env["DOCKER_CERT_PATH"]), "$DOCKER_CERT_PATH")
    if found is None:
        found = _pem_dir(config, str(config))
    return found


def is_loopback(host: str) -> bool:
    if host == "localhost":
        return True
    try:
        return ipaddress.ip_address(host.strip("[]")).is_loopback
    except ValueError:
        return False


def client(url: str, timeout: int) -> docker.APIClient:
    """A low-level docker client for ``url``. Raises EngineError for a URL it cannot use (and the
    docker SDK's own errors when it cannot connect: the caller words those)."""
    problem = url_problem(url)
    if problem:
        raise EngineError(f"engine URL {url!r}: {problem}", hint=f"e.g. {URL_HINT}")
    scheme = url.split("://", 1)[0]
    if scheme == "tcp":
        host = urlsplit(url).hostname or ""
        files = tls_for(url)
        if files is None and not is_loopback(host):
            raise EngineError(
                f"no TLS client certificate for {url}: cpforge does not talk to a remote engine in the clear",
                hint="create a docker context for it (`docker context create NAME --docker "
                f"host={url},ca=ca.pem,cert=cert.pem,key=key.pem`), or set DOCKER_CERT_PATH to a directory "
                "holding ca.pem, cert.pem and key.pem",
            )
        tls = files.config() if files is not None else False
        # requests lets REQUESTS_CA_BUNDLE / CURL_CA_BUNDLE replace a session's own CA (psf/requests#3829),
        # and the SDK asks the engine for its API version while it is being made: make it with a fixed
        # version, stop the environment's say, then ask. The engine's certificate is checked against its
        # own CA only, as the docker CLI does.
        api = docker.APIClient(base_url=url, timeout=timeout, tls=tls, version=MINIMUM_DOCKER_API_VERSION)
        api.trust_env = False
        api._version = str(api.version(api_version=False)["ApiVersion"])
        return api
    if scheme == "ssh":
        try:
            return docker.APIClient(base_url=url, timeout=timeout, use_ssh_client=False)
        except docker.errors.DockerException as exc:
            if "paramiko" in str(exc):
                raise EngineError(
                    f"cannot reach {url}: the ssh transport needs paramiko",
                    hint="pip install 'docker[ssh]' (or reinstall cpforge: it depends on it)",
                ) from None
            raise
    return docker.APIClient(base_url=url, timeout=timeout)
