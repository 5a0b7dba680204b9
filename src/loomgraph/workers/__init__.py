"""The worker fleet: `loomgraph worker` processes that take runs from the Postgres job queue
(pgqueuer) and advance them with the journal's leases (docs/scaling.md)."""
