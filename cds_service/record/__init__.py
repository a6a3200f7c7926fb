"""Gathering the patient's record: prefetch first, the EHR's FHIR server for what is missing.

prefetch (the templates we ask for), fhir_client (SSRF guard, paging, size caps), pinning
(connections go to the addresses the guard checked), cache
(shared by the host's workers on disk, or Redis), attachments (note text kept as a Binary),
patient_record (prefetch + parallel reads within the deadline).
"""
