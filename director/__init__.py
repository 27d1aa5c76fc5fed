"""director package of the Uptane stack (see README.md)."""
