"""The ``mlobs`` command: reads the local spool (runs, show, tail, export), checks the setup
(doctor) and makes a first run to look at (demo). Entry point: :func:`mlobs.cli.main.main`."""
