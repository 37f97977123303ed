"""Tools of the bundled reference apps (conference-travel review): travel policies and conference websites.

Nothing is imported here on purpose: importing a tool module registers its tools by name, so callers import
only the modules they use (``tools.travel_policy``, ``tools.website``).
"""
