"""Storage: SQLAlchemy 2.0 typed models, engine/session, queries."""
