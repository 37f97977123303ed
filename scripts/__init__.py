"""The ``rubot`` command line: a thin layer over the ``pipeline`` APIs (installed as ``rubot_app.scripts``;
``rubot = rubot_app.scripts.cli:main``).

:mod:`rubot_app.scripts.cli` holds the click commands, :mod:`rubot_app.scripts.output` the plain-text formatting
of runs and events, and :mod:`rubot_app.scripts.demo` the self-contained ``rubot demo``.
"""
