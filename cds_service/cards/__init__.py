"""What the clinician sees: CDS Hooks cards, CRD coverage-information, PAMA ratings, Questionnaires.

Pure rendering of engine decisions (no Flask, no network); may import the engine only.
"""
