"""`keel admin …`: provider administration straight against the database (run on the server).

Recorded in the audit trail like the admin API's actions, the actor being `cli:<OS user>`.
"""

from __future__ import annotations

import getpass

import typer
from rich.console import Console
from rich.table import Table

from cli.serve_command import migrate_database
from db.repositories.admin import AuditRepository
from db.repositories.tenants import ApiKeyRepository, TenantRepository
from db.session import session_scope

app = typer.Typer(no_args_is_help=True)
console = Console(stderr=True)


def _actor() -> str:
    try:
        return f"cli:{getpass.getuser()}"[:100]
    except (KeyError, OSError):  # no login name (a container without a passwd entry)
        return "cli"


@app.command("create-tenant")
def create_tenant(name: str = typer.Argument(..., help="Unique tenant name")) -> None:
    """Create a tenant and its first API key; the key is printed once, as the last line."""
    migrate_database()
    with session_scope() as session:
        tenants = TenantRepository(session)
        if tenants.get_by_name(name) is not None:
            console.print(f"[red]error:[/red] a tenant named {name!r} already exists")
            raise typer.Exit(1)
        tenant = tenants.add(name)
        api_key, key = ApiKeyRepository(session).create(tenant.id)
        tenant_id = tenant.id
        audit = AuditRepository(session)
        audit.record(_actor(), "tenant.create", "tenant", tenant_id, {"name": name})
        audit.record(_actor(), "api_key.create", "api_key", api_key.id, {"tenant_id": tenant_id})
    console.print(
        f"Created tenant {name} ({tenant_id}). Store this API key now; it is not shown again:"
    )
    print(key)


@app.command("create-key")
def create_key(name: str = typer.Argument(..., help="Tenant name")) -> None:
    """Issue another API key for an existing tenant (printed once, last line)."""
    migrate_database()
    with session_scope() as session:
        tenant = TenantRepository(session).get_by_name(name)
        if tenant is None:
            console.print(f"[red]error:[/red] no tenant named {name!r}")
            raise typer.Exit(1)
        api_key, key = ApiKeyRepository(session).create(tenant.id)
        AuditRepository(session).record(
            _actor(), "api_key.create", "api_key", api_key.id, {"tenant_id": tenant.id}
        )
    print(key)


@app.command("list-tenants")
def list_tenants() -> None:
    """List tenants and their key prefixes."""
    migrate_database()
    table = Table("id", "name", "keys")
    with session_scope() as session:
        page = TenantRepository(session).list(None, 100)
        for tenant in page.items:
            keys = ApiKeyRepository(session).list(tenant.id)
            live = [k.key_prefix + "…" for k in keys if k.revoked_at is None]
            table.add_row(tenant.id, tenant.name, ", ".join(live))
    Console().print(table)
