"""Agents of the bundled reference apps; ``agents.conference_review`` holds the conference-travel reviewer.

Nothing is imported here on purpose: importing an agent module registers its agents by name.
"""
