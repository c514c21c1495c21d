"""The side-by-side benchmark: brick against gunicorn (and granian, waitress) on the demo apps.

    python -m bench run        every app on every server, pinned with taskset, driven by wrk
    python -m bench stack      the same through nginx in the compose stack
    python -m bench profile    brick under cProfile or py-spy while wrk drives it
    python -m bench report F   render the tables and the chart again from a results JSON

The figure of merit is server CPU microseconds per request (DESIGN.md §4): the CPU time of the
whole server process tree, read from /proc before and after each wrk run, divided by the
requests wrk saw answered. bench/README.md says how to run it and how to read the numbers.

Modules: `wrk` (command line and output parsing), `procstat` (/proc accounting), `stats`
(medians), `servers` (how each server is started and stopped), `runner` (the scenarios),
`report` (markdown and JSON), `chart` (the PNG), `stack` (compose mode), `profiling`.
"""
