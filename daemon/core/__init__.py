"""The model's live state and every change to it: spaces, runtimes and runs (registry), each
run's supervision (run_supervisor), start-up reconciliation (reconcile), connection leases
(leases), what is held per runtime (runtime), restart backoff (restart) and a run's artifacts
(artifacts). May import browser, cdp, store, system and base."""
