"""Where decisions, feedback, shown-card fingerprints and audit records are kept.

database (the Store interface), sqlite / postgres (the two back ends), schema, database_url,
space (a full disk named as such at start),
audit (what an audit record holds), repeats (cards already shown), feedback (items as stored).
"""
