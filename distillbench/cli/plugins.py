"""``distillbench plugins``: installed plugin packages, their versions, components and failures."""

from __future__ import annotations

import os
import sys

import click


@click.command(name="plugins")
@click.option("--trace", is_flag=True,
              help="Trace discovery, imports and hook calls on stderr (or set DISTILLBENCH_TRACE_PLUGINS=1).")
@click.option("--json", "as_json", is_flag=True, help="Print the listing as JSON.")
def plugins_command(trace: bool, as_json: bool) -> None:
    """List plugin packages: version, entry point, components, load failures, disabled ones.

    \b
    Built-in components come first, then each entry point of the 'distillbench' group.
    Skip plugins by entry-point or package name:  DISTILLBENCH_DISABLE_PLUGINS=name1,name2
    Exits 2 when two plugins register the same component name (runs that use it fail).
    """
    from distillbench import API_VERSION, __version__
    from distillbench.plugins import DISABLE_ENV
    from distillbench.registry import load_registry

    registry = load_registry(strict=False, trace=True if trace else None)
    rows = [_describe(info, registry) for info in registry.plugins]
    if as_json:
        import json

        click.echo(json.dumps({"distillbench": __version__, "api_version": API_VERSION, "plugins": rows,
                               "conflicts": registry.conflicts}, indent=2))
    else:
        click.echo(f"distillbench {__version__}, plugin API {API_VERSION}, entry-point group 'distillbench'")
        for row in rows:
            click.echo("")
            _print_row(row)
        disabled = os.environ.get(DISABLE_ENV, "").strip()
        counts = {status: sum(r["status"] == status for r in rows)
                  for status in ("loaded", "failed", "incompatible", "disabled")}
        click.echo("")
        summary = ", ".join(f"{n} {status}" for status, n in counts.items() if n or status == "loaded")
        click.echo(f"{len(rows)} plugin(s): {summary}" + (f"  [{DISABLE_ENV}={disabled}]" if disabled else ""))
    for message in registry.conflicts:
        click.echo(f"Error: {message}", err=True)
    if registry.conflicts:
        sys.exit(2)


def _describe(info, registry) -> dict:
    components: dict[str, list[str]] = {}
    for entry in registry.provided_by(info.name) if info.status == "loaded" else ():
        components.setdefault(entry.component.kind, []).append(entry.component.name)
    return {
        "package": info.dist,
        "version": info.version,
        "builtin": info.builtin,
        "entry_point": None if info.builtin else info.name,
        "target": info.target,
        "api": sorted(info.api) if isinstance(info.api, (tuple, list, set, frozenset)) else info.api,
        "status": info.status,
        "error": info.failure.error if info.failure else None,
        "stage": info.failure.stage if info.failure else None,
        "import_ms": round(info.import_s * 1e3, 1),
        "components": components,
        "conflicts": [f"{kind}:{name}" for plugin, kind, name in registry.conflicting if plugin == info.name],
    }


def _print_row(row: dict) -> None:
    name = f"{row['package']} {row['version']}".strip() + (" (built-in)" if row["builtin"] else "")
    status = row["status"]
    if status == "loaded":
        head = name
    elif status == "disabled":
        head = f"{name}  DISABLED (DISTILLBENCH_DISABLE_PLUGINS)"
    elif status == "incompatible":
        head = f"{name}  SKIPPED: {row['error']}"
    else:
        head = f"{name}  FAILED at {row['stage']}: {row['error']}"
    click.echo(head)
    where = f"module {row['target']}" if row["builtin"] else f"entry point {row['entry_point']} = {row['target']}"
    if row["api"] is not None:
        where += f"  (declares plugin API {row['api']})"
    click.echo(f"  {where}")
    if status == "loaded":
        if not row["components"] and not row["conflicts"]:
            click.echo("  (no components)")
        for kind, names in row["components"].items():
            click.echo(f"  {kind:<10} {', '.join(names)}")
        for item in row["conflicts"]:
            kind, _, name = item.partition(":")
            click.echo(f"  {kind:<10} {name}  CONFLICT: registered by another plugin too (see the error below)")
