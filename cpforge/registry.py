"""A small OCI distribution (registry v2) client: manifests, blobs, auth from the Docker config.

Engine 20.10 cannot create manifest lists, so cpforge talks to the registry API itself for those.
Credentials come from ~/.docker/config.json (`auths`, `credsStore`, `credHelpers`); they are never
printed or logged.
"""

from __future__ import annotations

import base64
import hashlib
import json
import os
import re
import subprocess
import time
from dataclasses import dataclass
from pathlib import Path

import requests

from .errors import RegistryError as RegistryError

MANIFEST_V2 = "application/vnd.docker.distribution.manifest.v2+json"
MANIFEST_LIST_V2 = "application/vnd.docker.distribution.manifest.list.v2+json"
OCI_MANIFEST = "application/vnd.oci.image.manifest.v1+json"
OCI_INDEX = "application/vnd.oci.image.index.v1+json"
ACCEPT = ", ".join((MANIFEST_V2, MANIFEST_LIST_V2, OCI_MANIFEST, OCI_INDEX))
RETRIES = 3


@dataclass(frozen=True)
class Credentials:
    username: str
    password: str

    def __repr__(self) -> str:  # never leak the secret through logs or tracebacks
        return f"Credentials(username={self.username!r}, password=***)"


def docker_config_path() -> Path:
    return Path(os.environ.get("DOCKER_CONFIG", str(Path.home() / ".docker"))) / "config.json"


def credentials_for(host: str, config: Path | None = None) -> Credentials | None:
    """Look ``host`` up the way the docker CLI does: credHelpers, credsStore, then auths."""
    path = config or docker_config_path()
    if not path.exists():
        return None
    try:
        cfg = json.loads(path.read_text())
    except json.JSONDecodeError:
        raise RegistryError(f"{path} is not valid JSON", hint="fix it or run `docker login` again") from None
    helper = cfg.get("credHelpers", {}).get(host) or cfg.get("credsStore")
    if helper:
        try:
            out = subprocess.run(
                [f"docker-credential-{helper}", "get"],
                input=host,
                capture_output=True,
                text=True,
                check=False,
                timeout=30,
            )
        except OSError:
            raise RegistryError(
                f"credential helper docker-credential-{helper} is not installed",
                hint=f"install it, or remove it from {path}",
            ) from None
        if out.returncode == 0:
            data = json.loads(out.stdout)
            return Credentials(data.get("Username", ""), data.get("Secret", ""))
    for key in (host, f"https://{host}", f"http://{host}"):
        entry = cfg.get("auths", {}).get(key)
        if entry and entry.get("auth"):
            user, _, pw = base64.b64decode(entry["auth"]).decode().partition(":")
            return Credentials(user, pw)
    return None


def parse_reference(registry: str) -> tuple[str, str]:
    """`HOST[:PORT]/NAMESPACE` → (host, namespace)."""
    host, _, ns = registry.partition("/")
    if not host or not re.match(r"^[A-Za-z0-9.-]+(:\d+)?$", host) or not re.match(r"^[a-z0-9._/-]*$", ns):
        raise RegistryError(
            f"{registry!r} is not HOST[:PORT]/NAMESPACE", hint="e.g. --registry 127.0.0.1:5000/platform"
        )
    return host, ns.strip("/")


class Registry:
    """One registry host. Plain HTTP for loopback hosts (or when insecure), HTTPS otherwise."""

    def __init__(self, host: str, *, insecure: bool = False, credentials: Credentials | None = None) -> None:
        self.host = host
        loopback = host.split(":")[0] in ("localhost", "127.0.0.1", "::1") or host.startswith("127.")
        self.base = f"{'http' if insecure or loopback else 'https'}://{host}"
        self.credentials = credentials
        self.session = requests.Session()
        self._tokens: dict[str, str] = {}

    # ------------------------------------------------------------------ transport

    def _request(
        self, method: str, path: str, *, scope: str, headers: dict[str, str] | None = None, data: bytes | None = None
    ) -> requests.Response:
        url = path if path.startswith(("http://", "https://")) else f"{self.base}{path}"
        last: Exception | None = None
        for attempt in range(RETRIES + 1):
            h = dict(headers or {})
            if scope in self._tokens:
                h["Authorization"] = self._tokens[scope]
            try:
                resp = self.session.request(method, url, headers=h, data=data, timeout=60)
            except requests.exceptions.ConnectionError as exc:
                last = exc
                time.sleep(0.5 * (attempt + 1))
                continue
            if resp.status_code == 401:
                if scope in self._tokens:
                    raise RegistryError(
                        f"{self.host} refused the credentials for {scope}",
                        hint=f"run `docker login {self.host}` with an account that may push there",
                    )
                self._authenticate(resp, scope)
                continue
            if resp.status_code >= 500 and attempt < RETRIES:
                time.sleep(0.5 * (attempt + 1))
                continue
            return resp
        raise RegistryError(
            f"cannot reach the registry at {self.base} ({type(last).__name__ if last else 'no answer'})",
            hint="check the address and that the registry is running",
        )

    def _authenticate(self, resp: requests.Response, scope: str) -> None:
        challenge = resp.headers.get("WWW-Authenticate", "")
        if self.credentials is None:
            raise RegistryError(
                f"{self.host} requires authentication",
                hint=f"run `docker login {self.host}` (cpforge reads the Docker config)",
            )
        if challenge.lower().startswith("basic"):
            raw = f"{self.credentials.username}:{self.credentials.password}".encode()
            self._tokens[scope] = "Basic " + base64.b64encode(raw).decode()
            return
        params = dict(re.findall(r'(\w+)="([^"]*)"', challenge))
        realm = params.pop("realm", "")
        params["scope"] = scope
        try:
            tok = requests.get(
                realm, params=params, timeout=60, auth=(self.credentials.username, self.credentials.password)
            )
        except requests.exceptions.RequestException:
            raise RegistryError(f"cannot reach the token service of {self.host}") from None
        if tok.status_code != 200:
            raise RegistryError(
                f"{self.host} refused the credentials (token service: HTTP {tok.status_code})",
                hint=f"run `docker login {self.host}`",
            )
        data = tok.json()
        self._tokens[scope] = "Bearer " + (data.get("token") or data.get("access_token") or "")

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
        if start.status_code != 202:
            raise RegistryError(f"blob upload to {repo}: HTTP {start.status_code}")
        location = start.headers["Location"]
        if location.startswith("/"):
            location = self.base + location
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
