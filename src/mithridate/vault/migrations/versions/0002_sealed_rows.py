"""Sealed catalog rows: users, tokens and uploads carry the vault's signature over their content.

An insider who edits these rows (a role, a revoked flag, an upload's status) breaks the seal; the audit
log is indexed by action and target so the vault can cross-check a row against the entries that made it.
Rows of an older catalog are sealed by ``mithridate vault migrate``, which holds the key.

Revision ID: 0002_sealed_rows
Revises: 0001_initial
"""

import sqlalchemy as sa
from alembic import op

revision = "0002_sealed_rows"
down_revision = "0001_initial"
branch_labels = None
depends_on = None

SEALED = ("users", "tokens", "uploads")


def upgrade() -> None:
    for table in SEALED:
        with op.batch_alter_table(table) as batch:
            batch.add_column(sa.Column("seal", sa.String(128), nullable=True))
    op.create_index("ix_audit_action_target", "audit", ["action", "target"])


def downgrade() -> None:
    op.drop_index("ix_audit_action_target", "audit")
    for table in SEALED:
        with op.batch_alter_table(table) as batch:
            batch.drop_column("seal")
