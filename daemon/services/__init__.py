"""Workers that live beside each run's browser (run services): the observer and downloads on
the daemon's CDP connection, resource samples and the memory limit (monitor, pss), idle and
lifetime timeouts (timeouts), and the removal of old runs (retention). May import core and
everything below it; not control or rpc."""
