"""Management commands of the Rubot Django app."""
