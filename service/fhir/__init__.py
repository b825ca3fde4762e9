"""The FHIR R4 REST API's machinery: registry of types and search parameters, projection, search, ingest, $validate."""
