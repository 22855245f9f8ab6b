"""write-key rotation: the previous key and until when it is accepted

Revision ID: 0005
Revises: 0004
Create Date: 2026-12-01 11:00:00

"""

import sqlalchemy as sa
from alembic import op

revision = "0005"
down_revision = "0004"
branch_labels = None
depends_on = None


def upgrade():
    with op.batch_alter_table("sites") as batch_op:
        batch_op.add_column(sa.Column("previous_write_key", sa.String(length=64), nullable=True))
        batch_op.add_column(
            sa.Column("previous_write_key_until", sa.DateTime(timezone=True), nullable=True)
        )
        batch_op.create_index(
            "ix_sites_previous_write_key", ["previous_write_key"], unique=False
        )


def downgrade():
    with op.batch_alter_table("sites") as batch_op:
        batch_op.drop_index("ix_sites_previous_write_key")
        batch_op.drop_column("previous_write_key_until")
        batch_op.drop_column("previous_write_key")
