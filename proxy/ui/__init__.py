"""The dashboard under `/ui`: reports, canaries, records and the review queue, server-rendered.

Every page has a JSON twin under `/ui/api/…` that returns exactly the figures the page shows, so
what a person reads and what a script checks cannot drift apart. Pages are Jinja2 templates with
inline SVG charts and two small static files (CSS, JS) served by the gateway itself: nothing is
fetched from anywhere else, so the dashboard works on a machine with no internet. Every route is
admin-only (`proxy.server._auth.admin_only`). Wire it with
`app.router.routes.extend(ui_routes())`.
"""

from proxy.ui._routes import is_form_post, ui_routes

__all__ = ["is_form_post", "ui_routes"]
