"""The control surface: pages (targets, the control link per run), invocations and their
actions and outputs, the runtime's file area (files), idempotency keys, the lease origins
behind endpoint.browser_url (lease_origins), live views' screencasts and input (view), and the
parts assembled (surface). May import
core and everything below it; not services or rpc."""
