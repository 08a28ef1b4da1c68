"""Storage: SQL tables (SQLAlchemy + Alembic) and object stores for sealed state bodies."""
