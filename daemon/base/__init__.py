"""The facts every layer reads: error codes and the resource errors (errors), the name rule
(names), the configuration and its defaults (config), the records of the model and their
status tables (model, lifecycle), typed params (params) and the browser switches the daemon
owns (flags). Pure code and the config file's reading; imports nothing of the daemon."""
