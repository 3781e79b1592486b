"""The operator's console: web pages and a JSON API over the running PBX (twisted.web, Jinja2).

The operator's side of the PBX over HTTP: besides the console, `metrics` (Prometheus metrics) and the call
traces' resources, which the console mounts or the `[metrics]` listener serves alone.

- `site.ConsoleApp`: authentication, routing, mounting other resources (`/metrics`, call traces);
- `api` and `pages`: the JSON API (`/api/v1`, `openapi`) and the HTML pages (`templates/`, `static/`);
- `view.PbxView`: what both show and do, read from the PBX's live objects;
- `auth`: principals and roles, sessions, CSRF, logins with lock-out; `passwords`: scrypt and tokens;
- `extensions.ExtensionDirectory`: the configuration's extensions overlaid with the store's, read live by
  the registrar and the B2BUA.

The composition root (`pbx.service.admin`) builds it from plain objects; nothing here reads the config.
docs/console.md and docs/api.md describe it for operators. This package module imports nothing, so that
the `pbx` command can use `pbx.admin.passwords` without loading the web site.
"""
