"""The pure decision core: FHIR facts → criteria → a decision, with evidence.

No Flask, no network, no settings, no clock (``today`` is passed in): everything here is a
function of the patient's record, the draft order and the rules in ``mappings/`` and
``valuesets/``.  Import-linter (``pyproject.toml``) keeps it that way.

facts, tagging, terminology   raw FHIR JSON → coded items tagged with value sets
fhir_dates                    lenient FHIR dates (partial, missing, malformed)
criteria, evaluation          the closed criterion vocabulary, compiled once per guideline
prerequisites                 which rules a record can reach at all
decision                      precedence of outcomes, lazily evaluated
guidelines, registry          mappings/*.json loaded and checked; the immutable registry
studies, routing              which orders are spine CT/MRI; payer → program
attestation                   yes/no answers to documented criteria (the Questionnaire's model)
"""
