"""The daemon's web pages on the CDP port: live views, the dashboard, their WebSockets and
static assets.
May import core, control, services and below; a sibling of rpc (neither imports the other)."""
