"""A model written by a Spinach job."""

from __future__ import annotations

from django.db import models


class Note(models.Model):
    """A line of text."""

    text = models.CharField(max_length=100)
