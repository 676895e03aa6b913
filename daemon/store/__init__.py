"""Files on disk: atomic state records and ids (storage), append-only run logs (eventlog), the
writer thread for state records (state_writer), timed fsync and degraded runs (durability),
deletes kept inside their roots (roots), lock files that name their holder (lock_file), the
state dir's lock (state_lock) and the downloads a lost daemon left behind (lost_downloads).
May import system and base."""
