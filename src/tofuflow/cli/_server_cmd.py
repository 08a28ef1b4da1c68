"""`tofuflow server`: run the control plane and administer it (tokens, keys, audit)."""

from __future__ import annotations

import datetime as dt
import logging
import os
import signal
import socket
import threading
import time
from dataclasses import dataclass
from pathlib import Path
from typing import TYPE_CHECKING, Any

import click

from tofuflow.cli._common import aligned
from tofuflow.errors import TofuflowError

if TYPE_CHECKING:
    from types import FrameType

    from sqlalchemy.engine import Engine

    from tofuflow.envs import Reaper
    from tofuflow.server.leases import Leader

__all__ = ["CheckpointSigner", "InServerReaper", "server", "start_checkpoints", "start_reaper"]

_CONFIG = click.option(
    "--config",
    "config_path",
    type=click.Path(dir_okay=False, path_type=Path),
    envvar="TOFUFLOW_SERVER_CONFIG",
    help="Server TOML file (default: $TOFUFLOW_SERVER_CONFIG, else built-in defaults).",
)


def _load(config_path: Path | None, **overrides: Any) -> Any:
    from tofuflow.server.config import ServerConfig

    try:
        return ServerConfig.load(config_path, **overrides)
    except TofuflowError as err:
        raise click.ClickException(str(err)) from err


def _engine(config: Any) -> Any:
    from tofuflow.server.storage import make_engine, migrate

    try:
        engine = make_engine(config.effective_database_url)
        migrate(engine)
    except TofuflowError as err:  # a wrong URL, a database that is away: one line
        raise click.ClickException(str(err)) from err
    if config.notifications.get("destinations"):
        from tofuflow.server.notify import enable

        enable(engine)  # operator actions (a failed `audit verify`) notify too
    return engine


@click.group("server", invoke_without_command=True)
@_CONFIG
@click.option("--host", help="Address to bind (default 127.0.0.1: local only).")
@click.option("--port", type=int, help="Port to bind (default 8470).")
@click.option(
    "--workers",
    type=click.IntRange(min=1, max=64),
    default=1,
    show_default=True,
    help="Worker processes serving the one port, each a replica on the same database "
    "(PostgreSQL, or SQLite on a local disk); the reaper runs in this process only.",
)
@click.option(
    "--log-level",
    type=click.Choice(["debug", "info", "warning", "error"]),
    default="info",
    show_default=True,
    help="Server log on stderr: each request (method, path, status, who, time; never a token "
    "or query string) and each reaper action at info.",
)
@click.pass_context
def server(
    ctx: click.Context,
    config_path: Path | None,
    host: str | None,
    port: int | None,
    workers: int,
    log_level: str,
) -> None:
    """Run the control plane: the state service for the http backend.

    \b
    Without a configuration file it keeps everything under your data directory
    (SQLite database, a generated 0600 key file) and listens on 127.0.0.1:8470.
    Point a configuration at the state service with:
      terraform {
        backend "http" {
          address        = "http://127.0.0.1:8470/v1/state/WORKSPACE"
          lock_address   = "http://127.0.0.1:8470/v1/state/WORKSPACE/lock"
          unlock_address = "http://127.0.0.1:8470/v1/state/WORKSPACE/lock"
        }
      }
    a token from `tofuflow server tokens create` in TF_HTTP_PASSWORD, and any
    TF_HTTP_USERNAME (the binary sends no credentials without a username). By
    default only an approved run's apply session writes state; for a token's
    own writes, opt the workspaces into the simple applier mode
    ([[workspace_settings]] require_apply_session = false).
    """
    if ctx.invoked_subcommand is not None:
        ctx.obj = _load(config_path)
        return
    config = _load(config_path, host=host, port=port)
    _log_to_stderr(log_level)
    from tofuflow.server.serving import listen

    try:  # the port first: when it is taken, nothing else starts (no database, no reaper)
        sock = listen(config.host, config.port)
    except TofuflowError as err:
        raise click.ClickException(str(err)) from err
    with sock:
        _run(config, config_path, sock, workers, log_level)
    # SIGTERM (systemd, Kubernetes, Docker) or Ctrl-C: a stop asked for, not a failure.
    click.echo("tofuflow control plane stopped", err=True)


def _run(
    config: Any, config_path: Path | None, sock: socket.socket, workers: int, log_level: str
) -> None:
    """Serve on ``sock`` with the reaper, the notification sender and the checkpoint signer
    beside the app, until a stop; then stop them."""
    import uvicorn

    from tofuflow.server.app import create_app, start_sender
    from tofuflow.server.serving import freeze_start_up, uvicorn_config

    try:
        app = create_app(config)
    except TofuflowError as err:
        raise click.ClickException(str(err)) from err
    # Where it listens, and where people reach it when that differs (behind a proxy).
    listening = f"http://{config.host}:{config.port}"
    public = f", public URL {config.public_url}" if config.public_url else ""
    click.echo(f"tofuflow control plane on {listening}{public} (data: {config.data_dir})", err=True)
    for warning in config.warnings:
        click.echo(f"warning: {warning}", err=True)
    _warn_about_console(config)
    _warn_past_max_connections(app.state.engine, config, workers)
    local = "127.0.0.1" if config.host in {"0.0.0.0", "::", ""} else config.host  # noqa: S104
    reaper = start_reaper(app.state.engine, config, f"http://{local}:{config.port}")
    if reaper is not None:  # the console's Destroy wakes it (one process; workers wait)
        app.state.wake_reaper = reaper.reaper.wake
    sender = start_sender(app)  # notifications, when [notifications] names destinations
    checkpoints = start_checkpoints(app.state.checkpoints, config, app.state.engine)
    try:
        if workers > 1:
            _serve_workers(config_path, workers, config, sock, log_level)
        else:
            freeze_start_up()
            served = uvicorn_config(app, host=config.host, port=config.port)
            _serve(uvicorn.Server(served), sock)
    finally:
        if sender is not None:
            sender.stop()
        checkpoints.stop()
        if reaper is not None:
            reaper.stop()


def _serve(server: Any, sock: socket.socket) -> None:
    """Run ``server`` (a ``uvicorn.Server``) until SIGTERM or SIGINT, which it answers by
    finishing the requests in progress. uvicorn then raises the signal again for the
    handler it found; this one takes it, so the stop is a clean exit (status 0) instead of
    the CLI's 143 or `Aborted.`. A signal before uvicorn listens for them stops it too."""

    def stop(signum: int, frame: FrameType | None) -> None:
        del signum, frame
        server.should_exit = True

    previous = {sig: signal.signal(sig, stop) for sig in (signal.SIGINT, signal.SIGTERM)}
    try:
        server.run(sockets=[sock])
    finally:
        for sig, handler in previous.items():
            signal.signal(sig, handler)


def _warn_about_console(config: Any) -> None:
    """A public client, a provider that does not answer now: a line each, and it starts
    all the same (the provider may come up later)."""
    settings = config.console_settings(str(config.source or "configuration"))
    for warning in settings.start_up_warnings() if settings is not None else ():
        click.echo(f"warning: {warning}", err=True)


def _warn_past_max_connections(engine: Engine, config: Any, workers: int) -> None:
    """On PostgreSQL: say so when this server may open more connections than the database
    has room for (each connection past ``max_connections`` fails the request that wanted
    it: "sorry, too many clients already")."""
    if engine.dialect.name != "postgresql":
        return
    from sqlalchemy.exc import SQLAlchemyError

    from tofuflow.server.storage import postgres_connection_room

    try:
        limit, reserved, others = postgres_connection_room(engine)
    except SQLAlchemyError:
        return  # the server starts as before; the budget is a hint
    per_worker = config.connections_per_process()
    # With workers, this process runs the reaper, sender and checkpoints on its ORM pool.
    own = config.connections_per_process(serving=False) if workers > 1 else 0
    need = workers * per_worker + own
    room = limit - reserved - others
    if need <= room:
        return
    shape = f"{workers} worker(s) x {per_worker}" + (f" + {own} for this process" if own else "")
    click.echo(
        f"warning: this server may open up to {need} connections to PostgreSQL ({shape}: "
        f"[database] pool_size {config.database_pool_size} for the ORM and again for the "
        f"state path, plus max_overflow {config.database_max_overflow}), but the database "
        f"has room for {max(room, 0)} (max_connections {limit}, {reserved} reserved for "
        f"superusers, {others} in use by others). Under load, requests past that fail with "
        "'too many clients'. Lower [database] pool_size or max_overflow, run fewer --workers, "
        "or raise max_connections (or put PgBouncer in front); replicas on one database add "
        "up.",
        err=True,
    )


def _serve_workers(
    config_path: Path | None, workers: int, config: Any, sock: socket.socket, log_level: str
) -> None:
    """Worker processes read the same configuration; this process has migrated the database
    and made the key file already, so they do not race to."""

    from tofuflow.server.serving import serve_workers

    if config_path is not None:
        os.environ["TOFUFLOW_SERVER_CONFIG"] = str(config_path.resolve())
    serve_workers(workers, sock, host=config.host, port=config.port, log_level=log_level)


@dataclass
class CheckpointSigner:
    """The thread that signs the audit chains' heads, and the lease that makes it the one
    replica that does."""

    thread: threading.Thread
    leader: Leader
    stopping: threading.Event

    def stop(self) -> None:
        """Stop the thread, then hand the lease back so another replica signs from its next
        tick on."""
        self.stopping.set()
        self.thread.join(timeout=30)
        try:
            self.leader.release()
        except Exception as err:  # shutting down anyway: the lease expires on its own
            click.echo(f"audit checkpoints: could not release the lease: {err}", err=True)


def start_checkpoints(keeper: Any, config: Any, engine: Engine) -> CheckpointSigner:
    """Sign the audit chains' heads at start and every ``[audit] checkpoint_interval`` (a
    signature only when events were added). Replicas on one database elect one signer
    through the ``audit-checkpoints`` lease; the others look every minute (or interval)
    and take over when it lapses or is handed back."""
    import uuid

    from sqlalchemy.exc import SQLAlchemyError

    from tofuflow.server import leases
    from tofuflow.server.auth import parse_ttl

    interval = parse_ttl(config.checkpoint_interval).total_seconds()
    tick = min(interval, 60.0)
    holder = f"checkpoints@{socket.gethostname()}:{os.getpid()}:{uuid.uuid4().hex[:6]}"
    leader = leases.leader(
        engine, "audit-checkpoints", holder, dt.timedelta(seconds=max(tick * 3, 30))
    )
    stopping = threading.Event()
    log = logging.getLogger("tofuflow.audit.checkpoint")

    def loop() -> None:
        signed_at: float | None = None  # when this replica last signed, as leader
        while True:
            try:
                if not leader():
                    signed_at = None  # another signs; sign at once if this one takes over
                elif signed_at is None or time.monotonic() - signed_at >= interval:
                    keeper.checkpoint()
                    signed_at = time.monotonic()
            except TofuflowError as err:  # a tampered chain is logged by the keeper itself
                log.error("not signed: %s", err)
                signed_at = time.monotonic()
            except SQLAlchemyError as err:  # the database is away: try at the next tick
                log.error("cannot take the checkpoint lease: %s", err)
            if stopping.wait(tick):
                return

    thread = threading.Thread(target=loop, name="audit-checkpoints", daemon=True)
    thread.start()
    return CheckpointSigner(thread, leader, stopping)


def _log_to_stderr(level: str) -> None:
    """The server's and the reaper's ``logging`` records (``tofuflow.*``) go to stderr."""
    from tofuflow.server.logs import PlainLogHandler

    logger = logging.getLogger("tofuflow")
    logger.addHandler(PlainLogHandler())
    logger.setLevel(level.upper())


@dataclass
class InServerReaper:
    """The reaper thread started next to the server, and the lease that makes it leader."""

    reaper: Reaper
    leader: Leader

    @property
    def holder(self) -> str:
        return self.reaper.holder

    def stop(self) -> None:
        """Stop the thread, then hand the lease back so another replica takes over at once."""
        self.reaper.stop()
        try:
            self.leader.release()
        except Exception as err:  # shutting down anyway: the lease expires on its own
            click.echo(f"reaper: could not release its lease: {err}", err=True)


def start_reaper(engine: Engine, config: Any, url: str) -> InServerReaper | None:
    """Start the reaper when ``[environments] reaper`` is on: replicas on one database
    elect one leader through a lease; it reaps through ``url`` with its own token."""
    if not config.reaper:
        return None
    from tofuflow.envs import Reaper, default_holder
    from tofuflow.identity import StageIdentity
    from tofuflow.server import leases
    from tofuflow.server.auth import parse_ttl
    from tofuflow.server.reaping import ReaperToken, due_environments

    for stage, table in config.reaper_identity.items():  # wrong now, not at the first expiry
        where = f"{config.source or 'server configuration'}: environments.identity.{stage}"
        try:
            StageIdentity.from_config(table, stage=stage, where=where)
        except TofuflowError as err:
            raise click.ClickException(str(err)) from err
    interval = parse_ttl(config.reap_interval).total_seconds()
    holder = default_holder()
    leader = leases.leader(engine, "reaper", holder, dt.timedelta(seconds=max(interval * 3, 30)))
    reaper = Reaper(
        url, ReaperToken(engine), interval=interval, is_leader=leader,
        due=lambda: due_environments(engine), holder=holder, identity=config.reaper_identity,
    )  # fmt: skip
    return InServerReaper(reaper.start(), leader)


@server.group("tokens")
def tokens() -> None:
    """Create, list, revoke and prune API tokens (always expiring, stored hashed)."""


@tokens.command("create")
@click.option(
    "--role",
    required=True,
    type=click.Choice(["reader", "planner", "applier", "approver", "admin"]),
    help="reader: read state and runs; planner: also submit plans (read-only state); "
    "applier: also apply approved runs (and lock and write state in the simple applier "
    "mode); approver: also approve others' "
    "runs; admin: also force-unlock, rollback, override, delete.",
)
@click.option("--workspaces", default="*", show_default=True, help="Workspace glob, e.g. 'app/*'.")
@click.option("--ttl", default="30d", show_default=True, help="Lifetime: 90m, 12h, 30d (<= 365d).")
@click.option("--description", default="", help="What it is for (shown in lists and the audit).")
@click.pass_obj
def tokens_create(config: Any, role: str, workspaces: str, ttl: str, description: str) -> None:
    """Print a new token once (only its hash is kept: it cannot be shown again).

    \b
    Hand it to what uses it, in the pipeline's secret store:
      tofuflow plan / apply      TOFUFLOW_PLAN_TOKEN, TOFUFLOW_APPLY_TOKEN
                                 (or TOFUFLOW_TOKEN for every stage)
      the binary's http backend  TF_HTTP_PASSWORD (with any TF_HTTP_USERNAME)
    Where the pipeline has an OIDC identity, [[bindings]] can grant it instead
    (no token to store; docs/identity.md).
    """
    from tofuflow.server.admin import create_token
    from tofuflow.server.storage import shown_url

    engine = _engine(config)
    try:
        created = create_token(
            engine, role=role, workspaces=workspaces, ttl=ttl, description=description
        )
    except TofuflowError as err:
        raise click.ClickException(str(err)) from err
    click.echo(created.token)
    # Which control plane's database: a shell without TOFUFLOW_SERVER_CONFIG would make
    # tokens in the default one, which the real server has never heard of.
    click.echo(
        f"id {created.token_id}, role {created.role} on {created.workspaces!r}, "
        f"expires {created.expires_at}; in {shown_url(engine.url)}",
        err=True,
    )


@tokens.command("list")
@click.pass_obj
def tokens_list(config: Any) -> None:
    """List tokens (ids, roles, status; never secrets).

    Under a header row: id, role, workspace glob, status (expires, expired or
    revoked, with its time in UTC) and description.
    """
    from tofuflow.server.admin import list_tokens

    tokens = list_tokens(_engine(config))
    if not tokens:
        click.echo("no tokens yet: create one with `tofuflow server tokens create --role ROLE`")
        return
    now = dt.datetime.now(dt.UTC)
    table = [("ID", "ROLE", "WORKSPACES", "STATUS (UTC)", "DESCRIPTION")]
    dead = 0  # revoked or expired: what `tokens prune` may delete once old enough
    for row in tokens:  # revoked wins over expired: it was stopped before it ran out
        if row.revoked_at is not None:
            status, dead = f"revoked {row.revoked_at:%Y-%m-%d %H:%M}", dead + 1
        elif row.expires_at <= now:  # as the server refuses it (401)
            status, dead = f"expired {row.expires_at:%Y-%m-%d %H:%M}", dead + 1
        else:
            status = f"expires {row.expires_at:%Y-%m-%d %H:%M}"
        table.append((row.token_id, row.role, row.workspaces, status, row.description))
    click.echo(aligned(table))
    if dead:
        click.echo(
            f"{dead} of these are revoked or expired: `tofuflow server tokens prune` deletes "
            f"those dead for more than {_PRUNE_DEFAULT}",
            err=True,
        )


@tokens.command("revoke")
@click.argument("token_id")
@click.pass_obj
def tokens_revoke(config: Any, token_id: str) -> None:
    """Revoke a token at once.

    TOKEN_ID is the id `tokens list` shows, or the token as the server log and the
    audit log name it (tfw_<id>); a whole token that leaked works too.
    """
    from tofuflow.errors import ConflictError
    from tofuflow.server.admin import revoke_token

    try:
        revoked = revoke_token(_engine(config), token_id)
    except ConflictError as err:  # revoked already: the goal holds, not an error
        click.echo(str(err))
        return
    except TofuflowError as err:
        raise click.ClickException(str(err)) from err
    click.echo(f"revoked {revoked}")


_PRUNE_DEFAULT = "30d"


@tokens.command("prune")
@click.option(
    "--older-than",
    default=_PRUNE_DEFAULT,
    show_default=True,
    help="Delete tokens revoked or expired longer ago than this: 90m, 12h, 30d.",
)
@click.pass_obj
def tokens_prune(config: Any, older_than: str) -> None:
    """Delete tokens that were revoked or expired long ago.

    A token is never deleted while it can still be used. The audit log keeps each
    deleted token's creation and revocation, and one token.prune event names them; runs
    keep the name of whoever requested them.
    """
    from tofuflow.server.admin import prune_tokens
    from tofuflow.server.auth import parse_ttl

    try:
        age = parse_ttl(older_than, "duration")
    except TofuflowError as err:
        raise click.BadParameter(str(err), param_hint="--older-than") from err
    pruned = prune_tokens(_engine(config), age)
    if not pruned:
        click.echo(f"no tokens revoked or expired more than {older_than} ago")
        return
    click.echo(
        f"deleted {len(pruned)} tokens revoked or expired more than {older_than} ago: "
        f"{', '.join(pruned)}"
    )


@server.group("keys")
def keys() -> None:
    """Key-encryption keys: rotate without downtime."""


@keys.command("new")
@click.argument("path", type=click.Path(dir_okay=False, path_type=Path))
def keys_new(path: Path) -> None:
    """Make a new local key file at PATH (0600) and print its id.

    
    For a rotation, or a first start of several replicas: make the key once, copy the
    file to every replica (the same path in each one's [keys.current]), then restart
    them. A server makes a key by itself only for a database that holds nothing sealed
    yet. Refuses to replace an existing file.
    """
    from tofuflow.server.crypto import LocalKeyProvider

    if path.exists():
        raise click.ClickException(
            f"{path} already exists: a key file is never replaced (what it sealed could no "
            "longer be opened); give another path"
        )
    try:
        made = LocalKeyProvider.generate(path)
    except TofuflowError as err:
        raise click.ClickException(str(err)) from err
    click.echo(f"{made.key_id} {path}")


@keys.command("rotate")
@click.pass_obj
def keys_rotate(config: Any) -> None:
    """Re-wrap every data key under the current key.

    \b
    1. Add the new key as [keys.current] and move the old one to [[keys.previous]].
    2. Restart (or start) the servers with that configuration.
    3. Run this; it works in small batches while the servers keep serving.
    4. Run it again: once it reports 0 re-wrapped, remove the old key from
       [[keys.previous]]. State versions, run artifacts and plans are all covered.
    """
    from tofuflow.server.admin import rotate_keys
    from tofuflow.server.crypto import keyring_from_config
    from tofuflow.server.storage import holds_sealed

    try:
        engine = _engine(config)
        keyring = keyring_from_config(config.keys, config.data_dir, create=not holds_sealed(engine))
        count = rotate_keys(engine, keyring)
    except TofuflowError as err:
        raise click.ClickException(str(err)) from err
    click.echo(f"re-wrapped {count} data keys under {keyring.current.key_id}")


@server.command("backup")
@click.argument("destination", type=click.Path(file_okay=False, path_type=Path))
@click.pass_obj
def backup_command(config: Any, destination: Path) -> None:
    """Copy this control plane into DESTINATION, a new directory, while it serves.

    
    The database (SQLite, through its online backup: consistent however many writes go
    on), the data directory's keys, salt, audit-signing key and checkpoints, key files
    the configuration names elsewhere (under outside/), and MANIFEST.json (sha256 of each
    file, the audit log's last event). It names what it cannot copy: a PostgreSQL
    database (pg_dump), an object store, a KMS key, the passphrase. Restore:
    docs/operations.md#back-up-and-restore.
    """
    from tofuflow.server.backup import MANIFEST, backup

    _engine(config)  # the database is there and its schema current, or one line
    try:
        report = backup(config, destination)
    except TofuflowError as err:
        raise click.ClickException(str(err)) from err
    except KeyboardInterrupt as err:
        if (destination.expanduser() / MANIFEST).exists():  # it had just finished
            said = f"interrupted: the backup at {destination} is whole"
            raise click.ClickException(said) from err
        raise click.ClickException(
            f"interrupted: nothing was kept at {destination}; run the same command again"
        ) from err
    for line in report.lines():
        click.echo(line)


@server.group("audit")
def audit() -> None:
    """The hash-chained audit log."""


@audit.command("verify")
@click.pass_obj
def audit_verify(config: Any) -> None:
    """Check the chain; exits 1 and names the first bad event if any was altered."""
    from tofuflow.server.admin import verify_audit

    result = verify_audit(_engine(config))
    if result.ok:
        click.echo(f"audit log intact: {result.checked} events verified")
        return
    where = f"event {result.first_bad_id}" if result.first_bad_id else "the end of the log"
    raise click.ClickException(
        f"audit log broken at {where}: {result.reason} ({result.checked} events fit before it)"
    )


@audit.command("public-key")
@click.pass_obj
def audit_public_key(config: Any) -> None:
    """Print the PEM public key that verifies the audit checkpoints (give it to auditors)."""
    from tofuflow.server.checkpoints import signer_from_config

    try:
        signer = signer_from_config(config.audit_signing_key, config.data_dir)
        click.echo(signer.public_key_pem().decode(), nl=False)
    except TofuflowError as err:
        raise click.ClickException(str(err)) from err
