"""Install an OpenTofu release into tofuflow's cache, verified before it is ever run.

    path = install("1.12.6")              # -> <cache>/opentofu/1.12.6/linux_amd64/tofu
    installed_versions()                  # -> [("1.12.6", path), ...], newest first

Release layout (confirmed in opentofu/opentofu website/docs/intro/install/install-opentofu.sh,
``install_standalone``): ``<base>/v<version>/tofu_<version>_<os>_<arch>.zip`` next to
``tofu_<version>_SHA256SUMS``, whose lines read ``<sha256 hex>  <file name>``; the base is
``https://github.com/opentofu/opentofu/releases/download``.

What is proven before anything is unpacked: ``tofu_<version>_SHA256SUMS.gpgsig`` is a
valid GPG signature over SHA256SUMS by OpenTofu's release key, pinned here (the public key
is vendored next to this module, ``opentofu_signing_key.asc``, from
https://get.opentofu.org/opentofu.asc, and must have the fingerprint
``OPENTOFU_SIGNING_KEY_FINGERPRINT``); then the zip is the file SHA256SUMS names. A
compromised origin or mirror cannot serve a release of its own. GnuPG (``gpg``) checks the
signature, through python-gnupg, in a throw-away keyring holding only the pinned key.
"""

from __future__ import annotations

import contextlib
import hashlib
import json
import os
import platform
import re
import stat
import sys
import tempfile
import zipfile
from collections.abc import Iterator
from dataclasses import asdict, dataclass, replace
from pathlib import Path
from typing import IO, Any

import platformdirs

from tofuflow._version import __version__
from tofuflow.errors import ChecksumMismatchError, ConfigError, InstallError, SignatureError

__all__ = [
    "DEFAULT_BASE_URL",
    "DEFAULT_VERSION",
    "OPENTOFU_SIGNING_KEY_FINGERPRINT",
    "InstallRecord",
    "host_platform",
    "install",
    "installed_versions",
    "normalise_version",
    "read_record",
]

# Newest patch of the only stable series still patched when pinned (1.11.14 was announced
# as the last 1.11 release): see stefanko-ch/Nexus-Stack#877 (2026-09-16), which moves to
# 1.12.6 for GHSA-q7j3-v8qv-22vq among others, and upciti/wakemeops#4345 "add opentofu
# v1.12.6". Bump it deliberately, never to "latest": a pinned default keeps pipelines
# reproducible.
DEFAULT_VERSION = "1.12.6"
DEFAULT_BASE_URL = "https://github.com/opentofu/opentofu/releases/download"

BASE_URL_ENV = "TOFUFLOW_INSTALL_BASE_URL"
CACHE_DIR_ENV = "TOFUFLOW_CACHE_DIR"
# Another armored public key instead of OpenTofu's: for tests, and for a key rotation that
# a tofuflow release has not caught up with yet (see docs/security.md).
SIGNING_KEY_ENV = "TOFUFLOW_INSTALL_SIGNING_KEY"

# OpenTofu's release signing key (RSA 4096, created 2023-11-15, "OpenTofu (This key is used
# to sign opentofu providers) <core@opentofu.org>"): the fingerprint OpenTofu's install
# documentation tells users to check, and tofudl's GPGKeyFingerprint. Its primary key signs.
OPENTOFU_SIGNING_KEY_FINGERPRINT = "E3E6E43D84CB852EADB0051D0C0AF313E5FD9F80"
_PINNED_KEY = Path(__file__).with_name("opentofu_signing_key.asc")

# Release zips are ~30 MiB and the binary ~100 MiB; the caps only stop a misbehaving
# mirror (or a zip bomb) from filling the disk.
_MAX_ARCHIVE_BYTES = 512 * 1024 * 1024
_MAX_SUMS_BYTES = 1024 * 1024
_MAX_SIGNATURE_BYTES = 64 * 1024
_MAX_BINARY_BYTES = 1024 * 1024 * 1024
_CHUNK = 1024 * 1024

_RECORD_NAME = "install.json"
_VERSION_RE = re.compile(
    r"(?P<major>0|[1-9]\d*)\.(?P<minor>0|[1-9]\d*)\.(?P<patch>0|[1-9]\d*)"
    r"(?:-(?P<pre>[0-9A-Za-z]+(?:[.-][0-9A-Za-z]+)*))?"
)
_SUMS_LINE_RE = re.compile(r"(?P<hex>[0-9a-fA-F]{64}) [ *](?P<name>\S+)")

# OpenTofu's names, as its install script derives them from `uname` / `uname -m`.
_OS_NAMES = {"linux": "linux", "darwin": "darwin", "win32": "windows", "cygwin": "windows"}
_ARCH_NAMES = {
    "x86_64": "amd64",
    "amd64": "amd64",
    "aarch64": "arm64",
    "arm64": "arm64",
    "i386": "386",
    "i686": "386",
    "x86": "386",
    "armv6l": "arm",
    "armv7l": "arm",
    "arm": "arm",
}
_SUPPORTED_OS = frozenset({"linux", "darwin", "windows", "freebsd"})
_SUPPORTED_ARCH = frozenset({"amd64", "arm64", "386", "arm"})

_HINT = (
    "To use a mirror, set TOFUFLOW_INSTALL_BASE_URL (or --base-url) to a URL that serves "
    "v<version>/<file> like the GitHub releases; or install OpenTofu yourself and set "
    "TOFUFLOW_BINARY to its path."
)


@dataclass(frozen=True)
class InstallRecord:
    """What was verified when a binary was installed; stored next to it as install.json.

    ``archive_sha256`` is the zip's digest as matched against SHA256SUMS; ``binary_sha256``
    lets a later ``install()`` notice a cached binary that changed since; ``signed_by`` is
    the fingerprint of the key whose signature on SHA256SUMS was verified.
    """

    version: str
    os_name: str
    arch: str
    archive: str
    archive_sha256: str
    binary_sha256: str
    signed_by: str = ""


def install(
    version: str | None = None,
    *,
    cache_dir: Path | None = None,
    base_url: str | None = None,
    os_name: str | None = None,
    arch: str | None = None,
    timeout: float = 60.0,
    signing_key: Path | None = None,
) -> Path:
    """Download, verify and cache an OpenTofu release; return the path of its ``tofu``.

        tofu = install()                        # DEFAULT_VERSION for this machine
        tofu = install("v1.12.6", cache_dir=Path("/opt/cache"))

    Idempotent: a cached binary whose digest still matches its record is returned without
    any download. Raises ConfigError (bad version/platform/URL), InstallError (download or
    archive problem), SignatureError (SHA256SUMS is not signed by OpenTofu's key, or by
    ``signing_key``/$TOFUFLOW_INSTALL_SIGNING_KEY when given) or ChecksumMismatchError (the
    zip is not what SHA256SUMS promises).
    """
    ver = normalise_version(version or DEFAULT_VERSION)
    target_os, target_arch = _target_platform(os_name, arch)
    release = f"{_base_url(base_url)}/v{ver}"
    root = _cache_root(cache_dir)
    binary = root / ver / f"{target_os}_{target_arch}" / _binary_name(target_os)
    if _is_intact(binary):
        return binary
    root.mkdir(parents=True, exist_ok=True)
    with tempfile.TemporaryDirectory(prefix=".tmp-", dir=root) as tmp:
        key = _signing_key(signing_key)
        record = _fetch_and_verify(release, ver, target_os, target_arch, Path(tmp), timeout, key)
        staged = _extract_binary(Path(tmp) / record.archive, target_os, Path(tmp))
        record = replace(record, binary_sha256=_sha256_file(staged))
        _put_in_place(staged, record, binary)
    return binary


def installed_versions(cache_dir: Path | None = None) -> list[tuple[str, Path]]:
    """Binaries tofuflow installed for this machine, newest version first.

        for version, tofu in installed_versions(): ...

    Lists only complete installs (binary plus its record); the digest is not re-checked
    here, to keep discovery cheap: ``install(version)`` re-checks it.
    """
    root = _cache_root(cache_dir)
    try:
        host_os, host_arch = host_platform()
    except ConfigError:
        return []  # nothing can have been installed for a platform without releases
    if not root.is_dir():
        return []
    found: list[tuple[str, Path]] = []
    for entry in root.iterdir():
        binary = entry / f"{host_os}_{host_arch}" / _binary_name(host_os)
        if _VERSION_RE.fullmatch(entry.name) and read_record(binary) and binary.is_file():
            found.append((entry.name, binary))
    return sorted(found, key=lambda item: _version_key(item[0]), reverse=True)


def host_platform() -> tuple[str, str]:
    """This machine as OpenTofu names it in release files: ``("linux", "amd64")``."""
    os_name = "freebsd" if sys.platform.startswith("freebsd") else _OS_NAMES.get(sys.platform)
    machine = platform.machine().lower()
    arch = _ARCH_NAMES.get(machine)
    if os_name is None or arch is None:
        raise ConfigError(
            f"OpenTofu publishes no release for this platform ({sys.platform}/{machine}). "
            f"Pass os_name/arch explicitly (one of {sorted(_SUPPORTED_OS)} / "
            f"{sorted(_SUPPORTED_ARCH)}), or install OpenTofu yourself and set TOFUFLOW_BINARY."
        )
    return os_name, arch


def read_record(binary: Path) -> InstallRecord | None:
    """The install record next to ``binary``, or None if it is missing or unreadable.

    ``read_record(install()).archive_sha256`` is the digest SHA256SUMS vouched for.
    """
    try:
        data = json.loads((binary.parent / _RECORD_NAME).read_text(encoding="utf-8"))
        return InstallRecord(**data)
    except (OSError, ValueError, TypeError):
        return None


# --- validation and locations ------------------------------------------------------------


def normalise_version(version: str) -> str:
    """``"v1.12.6"`` -> ``"1.12.6"``; anything that is not semver is a ConfigError."""
    candidate = version.strip().removeprefix("v")
    if not _VERSION_RE.fullmatch(candidate):
        raise ConfigError(
            f"{version!r} is not an OpenTofu version: expected MAJOR.MINOR.PATCH with an "
            f"optional -prerelease, e.g. {DEFAULT_VERSION} or 1.12.0-beta1 (a leading v is fine)."
        )
    return candidate


def _version_key(version: str) -> tuple[int, int, int, int, tuple[tuple[int, int | str], ...]]:
    """Sort key by semver precedence: a release sorts after its prereleases."""
    match = _VERSION_RE.fullmatch(version)
    if match is None:
        return (-1, -1, -1, -1, ())
    pre = match["pre"]
    parts = tuple((0, int(p)) if p.isdigit() else (1, p) for p in re.split(r"[.-]", pre or ""))
    return (int(match["major"]), int(match["minor"]), int(match["patch"]), pre is None, parts)


def _target_platform(os_name: str | None, arch: str | None) -> tuple[str, str]:
    """The requested os/arch, defaulting to this machine's; only OpenTofu's names pass."""
    if os_name is None or arch is None:
        host_os, host_arch = host_platform()
        os_name, arch = os_name or host_os, arch or host_arch
    return (
        _check_choice("OS", os_name, _SUPPORTED_OS),
        _check_choice("architecture", arch, _SUPPORTED_ARCH),
    )


def _check_choice(what: str, value: str, allowed: frozenset[str]) -> str:
    if value not in allowed:
        raise ConfigError(
            f"unsupported {what} {value!r} for an OpenTofu release: use one of {sorted(allowed)}."
        )
    return value


def _cache_root(cache_dir: Path | None) -> Path:
    base = cache_dir or os.environ.get(CACHE_DIR_ENV) or platformdirs.user_cache_dir("tofuflow")
    return Path(base).expanduser() / "opentofu"


def _base_url(base_url: str | None) -> str:
    url = (base_url or os.environ.get(BASE_URL_ENV) or DEFAULT_BASE_URL).rstrip("/")
    # urllib would also open file:// and ftp:// URLs; only HTTP(S) is a release mirror.
    if not url.startswith(("https://", "http://")):
        raise ConfigError(
            f"install base URL {url!r} must start with https:// (or http:// for a local "
            f"mirror); check --base-url / {BASE_URL_ENV}."
        )
    return url


def _binary_name(os_name: str) -> str:
    return "tofu.exe" if os_name == "windows" else "tofu"


def _is_intact(binary: Path) -> bool:
    """True when ``binary`` was installed by us and has not changed since."""
    record = read_record(binary)
    if record is None or not record.signed_by or not binary.is_file():
        return False  # no signature was checked for it (installed before tofuflow did)
    return _sha256_file(binary) == record.binary_sha256


# --- download and verification -----------------------------------------------------------


def _fetch_and_verify(
    release: str,
    version: str,
    os_name: str,
    arch: str,
    tmp: Path,
    timeout: float,
    key: tuple[Path, str | None],
) -> InstallRecord:
    """Download SHA256SUMS, its signature and the zip into ``tmp``; raise unless the
    signature is the pinned key's and the digests agree."""
    sums_name = f"tofu_{version}_SHA256SUMS"
    archive = f"tofu_{version}_{os_name}_{arch}.zip"
    sums_path = _download(f"{release}/{sums_name}", tmp / sums_name, _MAX_SUMS_BYTES, timeout)
    signed_by = _verify_sums_signature(release, sums_name, sums_path, tmp, timeout, key)
    expected = _parse_sums(sums_path.read_text(encoding="utf-8", errors="replace")).get(archive)
    if expected is None:
        # Checked before the zip is fetched: an unlisted file could never be verified.
        raise ChecksumMismatchError(
            f"{sums_name} from {release} has no entry for {archive}, so it cannot be "
            f"verified: the download was discarded and nothing was installed. Check that "
            f"OpenTofu {version} is published for {os_name}_{arch}, or that your mirror "
            f"copied the release's {sums_name} unchanged."
        )
    archive_url = f"{release}/{archive}"
    actual = _sha256_file(_download(archive_url, tmp / archive, _MAX_ARCHIVE_BYTES, timeout))
    if actual != expected:
        raise ChecksumMismatchError(
            f"checksum mismatch for {archive_url}: expected sha256 {expected} (from "
            f"{sums_name}), got {actual}. The download was discarded and nothing was "
            f"installed or run. Retry; if it persists, the file was altered at its source "
            f"or your mirror ({BASE_URL_ENV}) serves a different file."
        )
    return InstallRecord(version, os_name, arch, archive, actual, "", signed_by)


def _signing_key(signing_key: Path | None) -> tuple[Path, str | None]:
    """(armored public key file, the fingerprint it must have, or None for "its own")."""
    chosen = signing_key or os.environ.get(SIGNING_KEY_ENV)
    if not chosen:
        return _PINNED_KEY, OPENTOFU_SIGNING_KEY_FINGERPRINT
    path = Path(chosen).expanduser()
    if not path.is_file():
        raise ConfigError(
            f"signing key {path} (from {'signing_key' if signing_key else SIGNING_KEY_ENV}) "
            "does not exist: give the path of an armored GPG public key, or unset it to use "
            "OpenTofu's pinned key"
        )
    return path, None


def _verify_sums_signature(
    release: str,
    sums_name: str,
    sums_path: Path,
    tmp: Path,
    timeout: float,
    key: tuple[Path, str | None],
) -> str:
    """Raise SignatureError unless ``<sums>.gpgsig`` is the pinned key's signature on it;
    return the signer's (primary key) fingerprint."""
    sig_url = f"{release}/{sums_name}.gpgsig"
    try:
        sig_path = _download(sig_url, tmp / f"{sums_name}.gpgsig", _MAX_SIGNATURE_BYTES, timeout)
    except InstallError as exc:
        raise SignatureError(
            f"{sums_name} is not signed: {sig_url} could not be fetched ({exc}). Nothing was "
            "installed. OpenTofu signs every release; a mirror must serve the .gpgsig file "
            "next to SHA256SUMS unchanged."
        ) from exc
    key_file, pinned = key
    gpg = _gpg(tmp / "gnupg")
    imported = gpg.import_keys(key_file.read_text(encoding="utf-8"))
    trusted = {f.upper() for f in imported.fingerprints}
    if pinned is not None and pinned not in trusted:
        raise SignatureError(
            f"the vendored OpenTofu key {key_file} does not have the pinned fingerprint "
            f"{pinned}: the tofuflow installation is damaged; reinstall tofuflow"
        )
    if not trusted:
        raise ConfigError(f"{key_file} holds no GPG public key: give an armored public key")
    with sig_path.open("rb") as signature:
        verified = gpg.verify_file(signature, str(sums_path))
    signer = (verified.pubkey_fingerprint or verified.fingerprint or "").upper()
    expected = pinned or ", ".join(sorted(trusted))
    if not verified.valid or signer not in (trusted if pinned is None else {pinned}):
        reason = verified.status or "no valid signature"
        raise SignatureError(
            f"{sums_name} from {release} is not signed by {expected} ({reason}; signed by "
            f"{signer or verified.key_id or 'an unknown key'}): refusing the release, nothing "
            f"was installed. A compromised origin or mirror ({BASE_URL_ENV}) can serve "
            "files whose checksums match; only OpenTofu's signature proves where they "
            "came from."
        )
    return signer


def _gpg(home: Path) -> Any:
    """A GnuPG with a fresh, empty keyring: no key the user trusts elsewhere counts."""
    try:
        import gnupg  # type: ignore[import-untyped]  # python-gnupg ships no type hints
    except ImportError as exc:  # a dependency of tofuflow; missing only in a broken install
        raise InstallError("python-gnupg is missing: pip install python-gnupg") from exc
    home.mkdir(mode=0o700)
    try:
        # Verifying needs no private key, so no gpg-agent: none is left running behind.
        return gnupg.GPG(gnupghome=str(home), options=["--no-autostart"])
    except (OSError, ValueError) as exc:
        raise InstallError(
            f"GnuPG (gpg) is needed to verify OpenTofu's release signature and could not be "
            f"run ({exc}): install it (apt-get install gnupg, brew install gnupg), or install "
            "OpenTofu yourself and set TOFUFLOW_BINARY."
        ) from exc


def _parse_sums(text: str) -> dict[str, str]:
    """``sha256sum`` output -> {file name: lowercase hex}; other lines are ignored."""
    sums: dict[str, str] = {}
    for line in text.splitlines():
        match = _SUMS_LINE_RE.fullmatch(line.strip())
        if match:
            sums[match["name"]] = match["hex"].lower()
    return sums


def _download(url: str, dest: Path, max_bytes: int, timeout: float) -> Path:
    """Stream ``url`` into ``dest``, refusing more than ``max_bytes``."""
    # Imported here: urllib.request costs ~20 ms, paid only when something is downloaded.
    import urllib.error
    import urllib.request

    # The scheme was checked in _base_url: only http(s) reaches urlopen.
    headers = {"User-Agent": f"tofuflow/{__version__}"}
    request = urllib.request.Request(url, headers=headers)  # noqa: S310
    try:
        with urllib.request.urlopen(request, timeout=timeout) as response:  # noqa: S310
            _copy_capped(response, dest, max_bytes, url)
    except urllib.error.HTTPError as exc:
        raise InstallError(f"download failed: HTTP {exc.code} for {url}. {_HINT}") from exc
    except (urllib.error.URLError, OSError) as exc:
        reason = getattr(exc, "reason", exc)
        raise InstallError(f"could not download {url}: {reason}. {_HINT}") from exc
    return dest


def _copy_capped(source: IO[bytes], dest: Path, max_bytes: int, what: str) -> None:
    written = 0
    with dest.open("wb") as out:
        for chunk in iter(lambda: source.read(_CHUNK), b""):
            written += len(chunk)
            if written > max_bytes:
                raise InstallError(
                    f"{what} is larger than {max_bytes // (1024 * 1024)} MiB, which no "
                    f"OpenTofu release file is; refusing it. {_HINT}"
                )
            out.write(chunk)


def _sha256_file(path: Path) -> str:
    digest = hashlib.sha256()
    with path.open("rb") as handle:
        for chunk in iter(lambda: handle.read(_CHUNK), b""):
            digest.update(chunk)
    return digest.hexdigest()


# --- extraction and placement ------------------------------------------------------------


def _extract_binary(archive: Path, os_name: str, tmp: Path) -> Path:
    """Copy only the ``tofu`` member out of the verified zip; return the staged file."""
    name = _binary_name(os_name)
    staged = tmp / f"staged-{name}"
    try:
        with zipfile.ZipFile(archive) as zf:
            member = _pick_member(zf, name, archive.name)
            with zf.open(member) as source:
                _copy_capped(source, staged, _MAX_BINARY_BYTES, f"{name} in {archive.name}")
    except (zipfile.BadZipFile, OSError) as exc:
        raise InstallError(f"{archive.name} is not a readable zip archive: {exc}. {_HINT}") from exc
    staged.chmod(0o755)
    return staged


def _pick_member(zf: zipfile.ZipFile, name: str, archive: str) -> zipfile.ZipInfo:
    """The regular-file member called ``name``; refuse archives with unsafe members."""
    for info in zf.infolist():
        _refuse_unsafe(info, archive)
    for info in zf.infolist():
        if info.filename == name:
            return info
    raise InstallError(
        f"{archive} has no {name!r} at its top level; it is not an OpenTofu release."
    )


def _refuse_unsafe(info: zipfile.ZipInfo, archive: str) -> None:
    """A genuine release has no symlinks and no paths outside the archive: reject both."""
    parts = info.filename.replace("\\", "/").split("/")
    if info.filename.startswith(("/", "\\")) or ".." in parts or ":" in parts[0]:
        raise InstallError(
            f"{archive} contains the member {info.filename!r}, which points outside the "
            f"archive; refusing to install from it. {_HINT}"
        )
    if stat.S_ISLNK(info.external_attr >> 16):
        raise InstallError(
            f"{archive} contains the symlink {info.filename!r}; refusing to install from it. "
            f"{_HINT}"
        )


def _put_in_place(staged: Path, record: InstallRecord, binary: Path) -> None:
    """Move binary and record into place; os.replace keeps each step atomic."""
    binary.parent.mkdir(parents=True, exist_ok=True)
    record_tmp = staged.with_name(_RECORD_NAME)
    record_tmp.write_text(json.dumps(asdict(record), indent=2) + "\n", encoding="utf-8")
    # The record goes last, so a crash in between leaves no record and the next run
    # reinstalls rather than trusting an unrecorded binary.
    with _removing_on_error(binary):
        os.replace(staged, binary)
        os.replace(record_tmp, binary.parent / _RECORD_NAME)


@contextlib.contextmanager
def _removing_on_error(path: Path) -> Iterator[None]:
    try:
        yield
    except OSError as exc:
        with contextlib.suppress(OSError):
            path.unlink()
        raise InstallError(f"could not install {path}: {exc}. {_HINT}") from exc
