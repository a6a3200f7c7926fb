"""The ``spine-cds`` command line: serve, demo, evaluate/batch, report, load-patients.

cli (argument parsing), server (gunicorn, several workers), demo, batch, patients (synthetic
patient Bundles → hook requests), loader (POSTs them to a FHIR server).
"""
