"""The daemon's own process and its service manager: logging (logs), sd_notify and socket
activation (notify, listen_fds), freed memory given back (memory), the file-descriptor budget
and the accept loop every listener uses (fd_budget, accept_loop). May import base only."""
