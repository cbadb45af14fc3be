"""The workloads of issue 12, each measuring the reconciler and the floor one after the other on one bed:
`latency` (one challenge at a time), `storm` (many at once), `scale` (a large idle cluster), `churn`
(Challenge status rewritten hundreds of times a second while challenges are wired)."""
