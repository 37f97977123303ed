"""Integrations with host frameworks: :mod:`pipeline.contrib.flask` (a Flask extension) and
:mod:`pipeline.contrib.django` (a Django app). Each imports its framework only when used."""
