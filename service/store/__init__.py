"""The database: engine and sessions, our tables and their enums, migrations, the Optuna internals we read, stored models."""
