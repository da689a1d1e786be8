"""`keel` — the command line: run the service, administer it, and use it as a customer.

keel serve [--port N]                 API + worker + reaper (embedded default unless configured)
keel admin create-tenant NAME         prints the new tenant's API key as the last line
keel models pull NAME                 install, verify (sha256) and cache a registry model
keel files upload FILE | list | …     customer flow over HTTP (KEEL_API_BASE, KEEL_API_KEY)
keel jobs create FILE --model M | watch ID | …
keel data profile FILE | mix FILE --ratio R --out OUT
keel safety build-corpus --model NAME
keel eval (--model NAME | --model-dir DIR) [--adapter DIR]
"""

from __future__ import annotations

import typer

from cli import admin_commands, client_commands, models_commands, serve_command

app = typer.Typer(help="Keel: safe fine-tuning as a service.", no_args_is_help=True)
app.command("serve")(serve_command.serve)
app.command("reaper", help="Run only the reaper loop (production: one per deployment).")(
    serve_command.reaper
)
app.add_typer(admin_commands.app, name="admin", help="Provider administration (direct DB access).")
app.add_typer(models_commands.app, name="models", help="The provider's model registry.")
app.add_typer(client_commands.files_app, name="files", help="Upload and manage dataset files.")
app.add_typer(client_commands.jobs_app, name="jobs", help="Create and follow fine-tuning jobs.")


def _add_optional(module: str, name: str, help_text: str) -> None:
    """Sub-apps that need the ML stack (absent from the API image) are added when importable."""
    import importlib

    try:
        sub = importlib.import_module(module)
    except ImportError:
        return
    if hasattr(sub, "app"):
        app.add_typer(sub.app, name=name, help=help_text)


_add_optional("cli.data_commands", "data", "Profile and mix datasets (safety mixer).")
_add_optional("cli.safety_commands", "safety", "Build the safety corpus.")
_add_optional("cli.eval_commands", "eval", "Evaluate a base model or adapter for safety.")

if __name__ == "__main__":
    app()
