"""A small OCI distribution (registry v2) client: manifests, blobs, tags, auth from the Docker config.

Engine 20.10 cannot create manifest lists, so cpforge talks to the registry API itself for those.
Credentials come from ~/.docker/config.json (`auths`, `credsStore`, `credHelpers`); they are never
printed or logged, and they go to two places only: the registry's own origin (scheme, host and
port), and the token service that the registry itself names in a `WWW-Authenticate: Bearer`
challenge. An upload `Location` or a redirect to any other origin gets no `Authorization` header.
"""

from __future__ import annotations

import base64
import hashlib
import json
import os
import re
import signal
import subprocess
import time
from dataclasses import dataclass
from pathlib import Path
from typing import Any
from urllib.parse import urljoin, urlsplit

import requests

from .errors import RegistryError as RegistryError

MANIFEST_V2 = "application/vnd.docker.distribution.manifest.v2+json"
MANIFEST_LIST_V2 = "application/vnd.docker.distribution.manifest.list.v2+json"
OCI_MANIFEST = "application/vnd.oci.image.manifest.v1+json"
OCI_INDEX = "application/vnd.oci.image.index.v1+json"
ACCEPT = ", ".join((MANIFEST_V2, MANIFEST_LIST_V2, OCI_MANIFEST, OCI_INDEX))
RETRIES = 3
REQUEST_TIMEOUT = 60.0  # seconds without an answer before a request counts as failed
HELPER_TIMEOUT = 30.0  # seconds a docker-credential-* helper may take
NOT_FOUND = "credentials not found"  # what docker-credential-* helpers print for an unknown host


@dataclass(frozen=True)
class Credentials:
    username: str
    password: str

    def __repr__(self) -> str:  # never leak the secret through logs or tracebacks
        return f"Credentials(username={self.username!r}, password=***)"


def docker_config_path() -> Path:
    return Path(os.environ.get("DOCKER_CONFIG", str(Path.home() / ".docker"))) / "config.json"


def credentials_for(
    host: str, config: Path | None = None, helper_timeout: float = HELPER_TIMEOUT
) -> Credentials | None:
    """Look ``host`` up the way the docker CLI does: credHelpers, credsStore, then auths."""
    path = config or docker_config_path()
    if not path.exists():
        return None
    try:
        cfg = json.loads(path.read_text())
    except json.JSONDecodeError as exc:
        raise RegistryError(
            f"{path}:{exc.lineno}: not valid JSON ({exc.msg})", hint="fix it or run `docker login` again"
        ) from None
    if not isinstance(cfg, dict):
        raise RegistryError(f"{path} is not a Docker config (a JSON object)", hint="fix it or run `docker login` again")
    helper = (cfg.get("credHelpers") or {}).get(host) or cfg.get("credsStore")
    if helper:
        found = _from_helper(str(helper), host, path, helper_timeout)
        if found is not None:
            return found
    for key in (host, f"https://{host}", f"http://{host}"):
        entry = (cfg.get("auths") or {}).get(key)
        if entry and entry.get("auth"):
            try:
                user, _, pw = base64.b64decode(entry["auth"]).decode().partition(":")
            except (ValueError, UnicodeDecodeError):
                raise RegistryError(
                    f'{path}: the "auth" of {key} is not base64 of USER:PASSWORD',
                    hint=f"run `docker login {host}` again",
                ) from None
            return Credentials(user, pw)
    return None


def _from_helper(helper: str, host: str, config: Path, timeout: float) -> Credentials | None:
    """Ask ``docker-credential-<helper>`` for ``host``: None when it has nothing for that host,
    a RegistryError naming the helper when it is missing, hangs, fails or answers garbage."""
    exe = f"docker-credential-{helper}"
    fix = f"run `{exe} get` by hand (host on stdin) to see what it does, or remove it from {config}"
    try:
        # its own process group: on a timeout the helper and anything it started are killed
        proc = subprocess.Popen(
            [exe, "get"],
            stdin=subprocess.PIPE,
            stdout=subprocess.PIPE,
            stderr=subprocess.PIPE,
            text=True,
            start_new_session=True,
        )
    except FileNotFoundError:
        raise RegistryError(
            f"credential helper {exe} (named in {config}) is not installed",
            hint=f"install it, or remove it from {config}",
        ) from None
    except OSError as exc:
        raise RegistryError(f"credential helper {exe} cannot be run ({exc.strerror})", hint=fix) from None
    try:
        stdout, stderr = proc.communicate(host, timeout=timeout)
    except subprocess.TimeoutExpired:
        _kill_group(proc)
        raise RegistryError(
            f"credential helper {exe} did not answer within {timeout:g}s when asked for {host}",
            hint=f"unlock the keychain it uses (it may be waiting for a password prompt), or {fix}",
        ) from None
    except BaseException:
        _kill_group(proc)
        raise
    out = subprocess.CompletedProcess(proc.args, proc.returncode, stdout, stderr)
    if out.returncode != 0:
        said = (out.stdout.strip() or out.stderr.strip()).splitlines()
        if said and NOT_FOUND in said[0].lower():
            return None  # the helper knows nothing about this host: docker then goes on anonymously
        raise RegistryError(
            f"credential helper {exe} failed for {host} (exit code {out.returncode}"
            + (f": {said[0][:200]}" if said else "")
            + ")",
            hint=f"log in again (`docker login {host}`), or {fix}",
        )
    try:
        data = json.loads(out.stdout)
        if not isinstance(data, dict):
            raise ValueError
        return Credentials(str(data.get("Username", "")), str(data.get("Secret", "")))
    except ValueError:  # its output is not echoed: it may hold the secret
        raise RegistryError(
            f'credential helper {exe} printed something that is not the JSON docker expects ({{"Username": …, '
            f'"Secret": …}}) for {host}',
            hint=fix,
        ) from None


def _kill_group(proc: subprocess.Popen[str]) -> None:
    try:
        os.killpg(proc.pid, signal.SIGKILL)
    except ProcessLookupError:
        pass
    proc.communicate()


def parse_reference(registry: str) -> tuple[str, str]:
    """`HOST[:PORT]/NAMESPACE` → (host, namespace)."""
    host, _, ns = registry.partition("/")
    if not host or not re.match(r"^[A-Za-z0-9.-]+(:\d+)?$", host) or not re.match(r"^[a-z0-9._/-]*$", ns):
        raise RegistryError(
            f"{registry!r} is not HOST[:PORT]/NAMESPACE", hint="e.g. --registry 127.0.0.1:5000/platform"
        )
    return host, ns.strip("/")


def origin(url: str) -> tuple[str, str, int]:
    """(scheme, host, port) of a URL, with the scheme's default port filled in: where a request goes."""
    parts = urlsplit(url)
    scheme = parts.scheme.lower()
    try:
        port = parts.port
    except ValueError:
        port = None
    return scheme, (parts.hostname or "").lower(), port or {"http": 80, "https": 443}.get(scheme, 0)


def _where(url: str) -> str:
    """A URL for messages: no query string (upload URLs carry state tokens there)."""
    parts = urlsplit(url)
    return f"{parts.scheme}://{parts.netloc}{parts.path}"


class Registry:
    """One registry host. Plain HTTP for loopback hosts (or when insecure), HTTPS otherwise."""

    def __init__(
        self,
        host: str,
        *,
        insecure: bool = False,
        credentials: Credentials | None = None,
        timeout: float = REQUEST_TIMEOUT,
        retries: int = RETRIES,
    ) -> None:
        self.host = host
        loopback = host.split(":")[0] in ("localhost", "127.0.0.1", "::1") or host.startswith("127.")
        self.base = f"{'http' if insecure or loopback else 'https'}://{host}"
        self.origin = origin(self.base)
        self.credentials = credentials
        self.timeout = timeout
        self.retries = retries
        self.session = requests.Session()
        self._tokens: dict[str, str] = {}

    # ------------------------------------------------------------------ transport

    def _request(
        self, method: str, path: str, *, scope: str, headers: dict[str, str] | None = None, data: bytes | None = None
    ) -> requests.Response:
        url = path if path.startswith(("http://", "https://")) else f"{self.base}{path}"
        ours = origin(url) == self.origin  # credentials go nowhere else
        attempt = 0
        while True:
            h = dict(headers or {})
            if ours and scope in self._tokens:
                h["Authorization"] = self._tokens[scope]
            try:
                resp = self.session.request(method, url, headers=h, data=data, timeout=self.timeout)
            except (requests.exceptions.ConnectionError, requests.exceptions.Timeout) as exc:
                if attempt >= self.retries:
                    raise self._unreachable(method, url, exc) from None
                attempt += 1
                time.sleep(0.5 * attempt)
                continue
            except requests.exceptions.RequestException as exc:
                raise RegistryError(
                    f"{method} {_where(url)} failed ({type(exc).__name__})",
                    hint="check the registry address (HOST[:PORT]/NAMESPACE)",
                ) from None
            if resp.status_code == 401:
                self._unauthorized(resp, url, ours, scope)  # raises unless it got credentials to try
                continue
            if resp.status_code >= 500 and attempt < self.retries:
                attempt += 1
                time.sleep(0.5 * attempt)
                continue
            return resp

    def _unreachable(self, method: str, url: str, exc: Exception) -> RegistryError:
        tries = f"{self.retries + 1} attempt{'s' if self.retries else ''}"
        if isinstance(exc, requests.exceptions.Timeout) and not isinstance(exc, requests.exceptions.ConnectTimeout):
            return RegistryError(
                f"the registry at {self.base} did not answer {method} {_where(url)} within "
                f"{self.timeout:g}s ({tries}, {type(exc).__name__})",
                hint="check that the registry is healthy and not overloaded (a proxy can also swallow answers), "
                "then publish again: what was pushed stays, and publishing again pushes only the rest",
            )
        return RegistryError(
            f"cannot reach the registry at {self.base} ({method} {_where(url)}: {type(exc).__name__}, {tries})",
            hint="check the address, the network, and that the registry is running",
        )

    def _unauthorized(self, resp: requests.Response, url: str, ours: bool, scope: str) -> None:
        """A 401: authenticate for ``scope`` (the caller then retries), or raise why not."""
        if not ours:
            raise RegistryError(
                f"{_where(url)} asks for credentials, but it is not the registry {self.base}: cpforge sends "
                "credentials only to the registry and to the token service the registry names",
                hint=f"configure {self.host} to hand out upload locations on its own address",
            )
        if scope in self._tokens:
            raise RegistryError(
                f"{self.host} refused the credentials for {scope}",
                hint=f"run `docker login {self.host}` with an account that may push there",
            )
        self._authenticate(resp, scope)

    def _authenticate(self, resp: requests.Response, scope: str) -> None:
        challenge = resp.headers.get("WWW-Authenticate", "")
        login = f"run `docker login {self.host}` (cpforge reads the Docker config)"
        if challenge.lower().startswith("basic"):
            if self.credentials is None:
                raise RegistryError(f"{self.host} requires authentication", hint=login)
            raw = f"{self.credentials.username}:{self.credentials.password}".encode()
            self._tokens[scope] = "Basic " + base64.b64encode(raw).decode()
            return
        if not challenge.lower().startswith("bearer"):
            raise RegistryError(f"{self.host} answered 401 without a usable challenge ({challenge[:80]!r})", hint=login)
        params = dict(re.findall(r'(\w+)="([^"]*)"', challenge))
        realm = params.pop("realm", "")
        scheme = urlsplit(realm).scheme.lower()
        if scheme not in ("http", "https") or (scheme == "http" and self.origin[0] == "https"):
            raise RegistryError(
                f"{self.host} names the token service {realm!r}; cpforge sends credentials only over HTTPS "
                "to a service an HTTPS registry names",
                hint=f"check the token service configuration of {self.host}",
            )
        params["scope"] = scope
        auth = (self.credentials.username, self.credentials.password) if self.credentials else None
        try:
            tok = requests.get(realm, params=params, timeout=self.timeout, auth=auth)
        except requests.exceptions.RequestException as exc:
            raise RegistryError(
                f"cannot reach the token service {_where(realm)} of {self.host} ({type(exc).__name__})",
                hint="check the network; the registry names that service in its WWW-Authenticate header",
            ) from None
        if tok.status_code != 200:
            raise RegistryError(
                f"{self.host} refused the credentials (token service: HTTP {tok.status_code})",
                hint=login if self.credentials else f"{self.host} allows no anonymous access: {login}",
            )
        try:
            data: Any = tok.json()
            token = str(data.get("token") or data.get("access_token") or "")
        except (ValueError, AttributeError):
            token = ""
        if not token:
            raise RegistryError(
                f"the token service {_where(realm)} of {self.host} answered without a token",
                hint=f"check the token service configuration of {self.host}",
            )
        self._tokens[scope] = "Bearer " + token

    # ------------------------------------------------------------------ API

    def ping(self) -> None:
        resp = self._request("GET", "/v2/", scope="registry:catalog:*")
        if resp.status_code != 200:
            raise RegistryError(f"{self.base}/v2/ answered HTTP {resp.status_code}: not a registry?")

    def manifest(self, repo: str, ref: str) -> tuple[str, str, bytes] | None:
        """(digest, media type, raw bytes) of a manifest, or None when it does not exist."""
        resp = self._request(
            "GET", f"/v2/{repo}/manifests/{ref}", scope=f"repository:{repo}:pull", headers={"Accept": ACCEPT}
        )
        if resp.status_code == 404:
            return None
        if resp.status_code != 200:
            raise RegistryError(f"GET manifest {repo}:{ref}: HTTP {resp.status_code} {resp.text[:200]}")
        digest = resp.headers.get("Docker-Content-Digest") or "sha256:" + hashlib.sha256(resp.content).hexdigest()
        return digest, resp.headers.get("Content-Type", "").split(";")[0], resp.content

    def tags(self, repo: str) -> list[str]:
        """Every tag of ``repo`` (following the registry's pagination); [] when the repository is unknown."""
        url: str | None = f"{self.base}/v2/{repo}/tags/list"
        found: set[str] = set()
        while url:
            resp = self._request("GET", url, scope=f"repository:{repo}:pull")
            if resp.status_code == 404:
                return []
            if resp.status_code != 200:
                raise RegistryError(f"GET tags of {repo}: HTTP {resp.status_code} {resp.text[:200]}")
            try:
                found.update(str(t) for t in (resp.json().get("tags") or []))
            except (ValueError, AttributeError):
                raise RegistryError(
                    f"{self.host} answered the tag list of {repo} with something that is not JSON"
                ) from None
            nxt = resp.links.get("next", {}).get("url")
            url = urljoin(url, nxt) if nxt else None
            if url and origin(url) != self.origin:
                break
        return sorted(found)

    def put_manifest(self, repo: str, ref: str, body: bytes, media_type: str) -> str:
        resp = self._request(
            "PUT",
            f"/v2/{repo}/manifests/{ref}",
            scope=f"repository:{repo}:pull,push",
            data=body,
            headers={"Content-Type": media_type},
        )
        if resp.status_code not in (200, 201):
            raise RegistryError(f"PUT manifest {repo}:{ref}: HTTP {resp.status_code} {resp.text[:300]}")
        return "sha256:" + hashlib.sha256(body).hexdigest()

    def has_blob(self, repo: str, digest: str) -> bool:
        resp = self._request("HEAD", f"/v2/{repo}/blobs/{digest}", scope=f"repository:{repo}:pull")
        return resp.status_code == 200

    def put_blob(self, repo: str, data: bytes) -> str:
        digest = "sha256:" + hashlib.sha256(data).hexdigest()
        if self.has_blob(repo, digest):
            return digest
        scope = f"repository:{repo}:pull,push"
        start = self._request("POST", f"/v2/{repo}/blobs/uploads/", scope=scope)
        if start.status_code != 202 or not start.headers.get("Location"):
            raise RegistryError(f"blob upload to {repo}: HTTP {start.status_code} (no upload location)")
        location = urljoin(start.url, start.headers["Location"])  # relative, or on another host
        sep = "&" if "?" in location else "?"
        done = self._request(
            "PUT",
            f"{location}{sep}digest={digest}",
            scope=scope,
            data=data,
            headers={"Content-Type": "application/octet-stream"},
        )
        if done.status_code != 201:
            raise RegistryError(f"blob upload to {repo}: HTTP {done.status_code} {done.text[:200]}")
        return digest
