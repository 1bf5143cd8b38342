"""Development-only helpers shared by the tests and the benchmarks; not part of the wheel (pyproject's package list
leaves it out). Importable from the repository root: pytest puts the root on the path, and benchmarks run as
`python -m bench.NAME`.

- `kaizen_testing.slack`: a fake Slack Web API, response_url hooks and Socket Mode server; `signed_headers`.
- `kaizen_testing.discord`: a fake Discord gateway and REST API.
- `kaizen_testing.pg`: a throwaway PostgreSQL cluster.
- `kaizen_testing.scripted`: the one scripted chat model (a fixed answer, streamed step by step).
- `kaizen_testing.serve`: `python -m kaizen_testing.serve serve ...` runs the `kaizen` CLI with the scripted model.
"""
