"""One module per FHIR resource family: ``to_<resource>(ctx, ...)`` and ``from_<resource>(...)``."""
