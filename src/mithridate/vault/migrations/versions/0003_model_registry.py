"""The model registry: models and their signed records, aliases, dataset marks and derivations, responses.

Revision ID: 0003_model_registry
Revises: 0002_sealed_rows
"""

import sqlalchemy as sa
from alembic import op

revision = "0003_model_registry"
down_revision = "0002_sealed_rows"
branch_labels = None
depends_on = None


def upgrade() -> None:
    op.create_table(
        "models",
        sa.Column("name", sa.String(64), primary_key=True),
        sa.Column("number", sa.Integer, primary_key=True),
        sa.Column("format", sa.String(16), nullable=False),
        sa.Column("size", sa.BigInteger, nullable=False),
        sa.Column("manifest", sa.String(255), nullable=False),
        sa.Column("manifest_sha256", sa.String(64), nullable=False),
        sa.Column("created", sa.String(40), nullable=False),
        sa.Column("created_by", sa.String(64), nullable=False),
        sa.Column("status", sa.String(16), nullable=False),
        sa.Column("reason", sa.Text),
        sa.Column("seal", sa.String(128)),
    )
    op.create_table(
        "aliases",
        sa.Column("model", sa.String(64), primary_key=True),
        sa.Column("alias", sa.String(64), primary_key=True),
        sa.Column("number", sa.Integer),
        sa.Column("updated", sa.String(40), nullable=False),
        sa.Column("updated_by", sa.String(64), nullable=False),
        sa.Column("seal", sa.String(128)),
    )
    op.create_table(
        "dataset_marks",
        sa.Column("dataset", sa.String(64), primary_key=True),
        sa.Column("number", sa.Integer, primary_key=True),
        sa.Column("status", sa.String(16), nullable=False),
        sa.Column("reason", sa.Text, nullable=False),
        sa.Column("created", sa.String(40), nullable=False),
        sa.Column("created_by", sa.String(64), nullable=False),
        sa.Column("seal", sa.String(128)),
    )
    op.create_table(
        "derivations",
        sa.Column("child", sa.String(80), primary_key=True),
        sa.Column("parents", sa.Text, nullable=False),
        sa.Column("record", sa.String(255), nullable=False),
        sa.Column("created", sa.String(40), nullable=False),
        sa.Column("created_by", sa.String(64), nullable=False),
    )
    op.create_table(
        "responses",
        sa.Column("id", sa.String(40), primary_key=True),
        sa.Column("created", sa.String(40), nullable=False),
        sa.Column("actor", sa.String(64), nullable=False),
        sa.Column("cause", sa.Text, nullable=False),
        sa.Column("detail", sa.Text, nullable=False),
        sa.Column("undone_by", sa.String(64)),
        sa.Column("undone_at", sa.String(40)),
        sa.Column("seal", sa.String(128)),
    )


def downgrade() -> None:
    for table in ("responses", "derivations", "dataset_marks", "aliases", "models"):
        op.drop_table(table)
