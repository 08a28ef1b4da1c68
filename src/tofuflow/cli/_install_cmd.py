"""`tofuflow install`: fetch a verified OpenTofu release into tofuflow's cache."""

from __future__ import annotations

from pathlib import Path

import click

from tofuflow.errors import TofuflowError
from tofuflow.tofu import DEFAULT_VERSION, read_record
from tofuflow.tofu import install as install_release

__all__ = ["install"]


@click.command("install")
@click.argument("version", required=False)
@click.option(
    "--cache-dir",
    type=click.Path(file_okay=False, path_type=Path),
    help="Cache directory (default: $TOFUFLOW_CACHE_DIR, else your user cache dir).",
)
@click.option(
    "--base-url",
    metavar="URL",
    help="Release mirror serving v<VERSION>/<file> (default: $TOFUFLOW_INSTALL_BASE_URL, "
    "else GitHub releases).",
)
def install(version: str | None, cache_dir: Path | None, base_url: str | None) -> None:
    """Download OpenTofu VERSION for this machine and verify it before it can run.

    \b
    What it downloads (VERSION defaults to the pinned release):
      <base>/v<VERSION>/tofu_<VERSION>_SHA256SUMS
      <base>/v<VERSION>/tofu_<VERSION>_SHA256SUMS.gpgsig
      <base>/v<VERSION>/tofu_<VERSION>_<os>_<arch>.zip
    with <base> = https://github.com/opentofu/opentofu/releases/download.

    It checks, with GnuPG (gpg), that SHA256SUMS is signed by OpenTofu's release key
    (pinned in tofuflow: E3E6E43D84CB852EADB0051D0C0AF313E5FD9F80), then the zip's
    sha256 against its line in SHA256SUMS. A missing or wrong signature, a missing
    line or a different digest stops the install: the download is discarded and
    nothing is unpacked or run. Only then is the single `tofu` file taken out of the zip and
    placed at <cache>/opentofu/<VERSION>/<os>_<arch>/tofu. Running it again for an
    installed version downloads nothing.

    \b
    Behind a firewall, point it at a mirror with the same layout:
      tofuflow install --base-url https://mirror.example/opentofu
      (or export TOFUFLOW_INSTALL_BASE_URL=https://mirror.example/opentofu)

    tofuflow finds binaries it installed by itself; to pin one explicitly, set
    TOFUFLOW_BINARY to the path this command prints.
    """
    try:
        binary = install_release(version, cache_dir=cache_dir, base_url=base_url)
    except TofuflowError as err:
        raise click.ClickException(str(err)) from err
    click.echo(str(binary))
    record = read_record(binary)
    if record is not None:
        click.echo(f"verified sha256 {record.archive_sha256} ({record.archive})")


# The docstring cannot interpolate; name the pinned default so --help never goes stale.
install.help = (install.help or "").replace("the pinned release", f"{DEFAULT_VERSION}")
