"""The ``rubot`` command line: a thin layer over the ``pipeline`` APIs (``rubot = scripts.cli:main``).

:mod:`scripts.cli` holds the click commands, :mod:`scripts.output` the plain-text formatting of runs and
events, and :mod:`scripts.demo` the self-contained ``rubot demo``.
"""
