"""One browser: starting it, its process tree and its end (process, process_tree, procutil),
which processes are the daemon's (spawn_tags), which executable (discovery), named profiles
(profiles) and the warm pool (pool). May import cdp, store, system and base."""
