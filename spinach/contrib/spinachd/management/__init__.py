"""Management commands of the Spinach Django app."""
